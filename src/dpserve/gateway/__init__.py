"""The gateway (`dpserve router`): one OpenAI endpoint in front of N replicas, with pluggable routing."""
