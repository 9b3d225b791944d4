"""Everything about reaching Temporal: client, search attributes, task queues, dev server."""
