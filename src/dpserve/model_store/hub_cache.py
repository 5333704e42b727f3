"""A Hugging Face hub id (`org/name`) found in this machine's HF cache, never downloaded.

dpserve never fetches weights or tokenizers at run time. A vLLM replica given a hub id downloads it
into the HF cache itself (HF_HOME / HF_HUB_CACHE); the gateway's precise_prefix tokenizer, which
must tokenise exactly as that replica does, reads the same files from there.
"""

from __future__ import annotations

from pathlib import Path

# A folder holds a tokenizer only with its vocabulary: with tokenizer_config.json alone transformers
# builds a 3-token tokenizer for GPT2/Llama/Qwen2 classes, which encodes every prompt to nothing.
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tiktoken.model")


def hub_cache_dir() -> str:
    """Where huggingface_hub looks (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return "the HF cache"
    return str(constants.HF_HUB_CACHE)


def cached_tokenizer_dir(repo_id: str) -> Path | None:
    """The cached snapshot folder (main revision) holding `repo_id`'s tokenizer with its vocabulary,
    or None when the id is not one or no such folder is in the local HF cache. No network access.

    Files looked up one by one, not a snapshot: `snapshot_download(local_files_only=True)` wants
    every file of the repo's listing that its patterns match, and a cache filled by `hf download`
    or by vLLM holds that listing — so files nobody downloads (Llama 3's
    `original/tokenizer.model`) made a cached tokenizer look absent."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    for name in ("tokenizer.json", "tokenizer_config.json"):
        try:
            found = try_to_load_from_cache(repo_id, name)
        except (OSError, ValueError):  # ValueError: not a hub id (`..`, a path, `a/b/c`, 97+ chars)
            return None
        if isinstance(found, str):  # else None or the "known to be absent" sentinel
            folder = Path(found).parent
            if any((folder / f).is_file() for f in VOCABULARY_FILES):
                return folder
    return None
