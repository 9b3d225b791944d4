"""`lockmaster simulate`: play a scenario of review events and job outcomes against the real
workflows on a real Temporal server, with a simulated Gerrit and a simulated executor
(spec/scenarios.md)."""
