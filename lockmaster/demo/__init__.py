"""The example project the main job drives through check."""
