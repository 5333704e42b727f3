"""The replica's OpenAI server, shared by `dpserve engine` and `dpserve sim` over EngineClient."""
