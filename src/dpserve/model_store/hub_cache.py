"""A Hugging Face hub id (`org/name`) found in this machine's HF cache, never downloaded.

dpserve never fetches weights or tokenizers at run time. A vLLM replica given a hub id downloads it
into the HF cache itself (HF_HOME / HF_HUB_CACHE); the gateway's precise_prefix tokenizer, which
must tokenise exactly as that replica does, reads the same files from there.
"""

from __future__ import annotations

import re
from pathlib import Path

# Hub ids are `name` or `org/name`: letters, digits, `-`, `_`, `.`; no `..`, no leading `-`/`.`.
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
TOKENIZER_FILES = ["tokenizer*", "special_tokens_map.json", "vocab.*", "merges.txt", "*.model",
                   "added_tokens.json", "chat_template.*", "config.json", "generation_config.json"]


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name


def cached_snapshot(repo_id: str, allow_patterns: list[str] | None = None) -> Path | None:
    """The newest cached snapshot folder of `repo_id` (its files matching `allow_patterns`), or
    None when the id is not one or nothing of it is in the local HF cache. No network access."""
    if not looks_like_hub_id(repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        path = snapshot_download(repo_id, local_files_only=True, allow_patterns=allow_patterns)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return Path(path)
