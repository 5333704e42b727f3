"""`dpserve batch`: offline data-parallel inference over an OpenAI batch JSONL file."""
