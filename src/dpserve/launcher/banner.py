"""The "how to call it" text `dpserve serve` prints once the service answers."""

from __future__ import annotations


def usage_banner(base_url: str, model: str, log_dir: str, layout: str) -> str:
    return f"""
dpserve is serving {model} at {base_url}  (Ctrl-C stops everything; replica logs: {log_dir})
  {layout}

  curl {base_url}/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}], "max_tokens": 32}}'

  python -c 'from openai import OpenAI
c = OpenAI(base_url="{base_url}/v1", api_key="none")
r = c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello!"}}])
print(r.choices[0].message.content)'

  workers: curl {base_url}/workers    metrics: curl {base_url}/metrics
"""
