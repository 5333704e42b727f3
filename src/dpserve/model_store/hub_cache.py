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


def looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name


def cached_tokenizer_dir(repo_id: str) -> Path | None:
    """The cached snapshot folder (main revision) holding `repo_id`'s tokenizer_config.json, or
    None when the id is not one or that file is not in the local HF cache. No network access.

    One file looked up, not a snapshot: `snapshot_download(local_files_only=True)` wants every
    file of the repo's listing that the patterns match, and a cache filled by `hf download` or by
    vLLM holds that listing — so files nobody downloads (Llama 3's `original/tokenizer.model`) made
    a cached tokenizer look absent."""
    if not looks_like_hub_id(repo_id):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        found = try_to_load_from_cache(repo_id, "tokenizer_config.json")
    except (OSError, ValueError):  # ValueError: an id the hub's validator refuses
        return None
    return Path(found).parent if isinstance(found, str) else None
