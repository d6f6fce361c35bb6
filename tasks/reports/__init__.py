"""Report text: rule-based section parsing at ingest, LLM structuring/translation/synthesis after it."""
