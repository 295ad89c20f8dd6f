"""Prompt tokenisation for the UMT5 text encoder, from files the user has.

Two backends, picked from what the path holds:
- `tokenizer.json` (Hugging Face `tokenizers`; google/umt5-xxl ships one), or
- `spiece.model` (SentencePiece).
A folder may hold either (tokenizer.json wins). Output follows Wan's text pipeline: clean the
prompt (HTML unescape, collapse whitespace), tokenise, truncate the pieces to `max_length - 1`,
append EOS (as the T5 tokenizer's "$A </s>" template does, so EOS survives truncation), pad with
the pad id to exactly `max_length` (512 in Wan), and return a boolean mask of real tokens.
"""
from __future__ import annotations

import html
import re
from typing import Sequence

import numpy as np
from absl import logging

from wildactor_jax import fs

TEXT_LEN = 512
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json",
                   "special_tokens_map.json")


def clean_prompt(text: str) -> str:
  """Wan's prompt cleaning: fix mojibake when ftfy is installed, unescape HTML twice (prompts
  scraped from the web are often double-escaped), collapse runs of whitespace."""
  try:
    import ftfy
    text = ftfy.fix_text(text)
  except ImportError:  # optional: only changes prompts with broken unicode
    pass
  text = html.unescape(html.unescape(text)).strip()
  return re.sub(r"\s+", " ", text).strip()


def _special_tokens(folder: str) -> dict:
  """eos/pad token strings from tokenizer_config.json / special_tokens_map.json when present."""
  found = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    path = fs.join(folder, name)
    if not fs.isfile(path):
      continue
    cfg = fs.read_json(path)
    for key in ("eos_token", "pad_token"):
      value = cfg.get(key)
      if isinstance(value, dict):  # AddedToken serialisation
        value = value.get("content")
      if isinstance(value, str) and key not in found:
        found[key] = value
  return found


class Tokenizer:
  """Callable: `tokenizer(prompts, max_length) -> (ids int32 (B, L), mask bool (B, L))`."""

  def __init__(self, encode_batch, eos_id: int, pad_id: int, clean: bool = True,
               source: str = ""):
    self._encode_batch = encode_batch
    self.eos_id = int(eos_id)
    self.pad_id = int(pad_id)
    self.clean = clean
    self.source = source

  @classmethod
  def from_path(cls, path: str, clean: bool = True) -> "Tokenizer":
    """A tokenizer file, or a folder holding one (local or gs://, read through `fs`)."""
    path = str(path)
    if fs.isdir(path):
      folder = path
      for name in ("tokenizer.json", "spiece.model"):
        if fs.isfile(fs.join(path, name)):
          path = fs.join(path, name)
          break
      else:
        raise FileNotFoundError(f"{path}: no tokenizer.json or spiece.model")
    elif fs.isfile(path):
      folder = str(fs.path(path).parent)
    else:
      raise FileNotFoundError(f"{path}: no such tokenizer file")
    special = _special_tokens(folder)
    if path.endswith(".json"):
      return cls._from_tokenizers(path, special, clean)
    if path.endswith(".model"):
      return cls._from_sentencepiece(path, clean)
    raise ValueError(f"{path}: expected a tokenizer.json or a SentencePiece .model file")

  @classmethod
  def _from_tokenizers(cls, path: str, special: dict, clean: bool) -> "Tokenizer":
    from tokenizers import Tokenizer as HFTokenizer
    tok = HFTokenizer.from_str(fs.read_text(path))
    # Truncation/padding baked into the json would fight ours; we also append EOS ourselves so
    # the result does not depend on whether the file carries a post-processor.
    tok.no_truncation()
    tok.no_padding()
    eos = tok.token_to_id(special.get("eos_token", "</s>"))
    if eos is None:
      raise ValueError(f"{path}: vocabulary has no EOS token {special.get('eos_token', '</s>')!r}")
    pad = tok.token_to_id(special.get("pad_token", "<pad>"))

    def encode_batch(texts):
      return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]

    return cls(encode_batch, eos, 0 if pad is None else pad, clean, path)

  @classmethod
  def _from_sentencepiece(cls, path: str, clean: bool) -> "Tokenizer":
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_proto=fs.read_bytes(path))
    if sp.eos_id() < 0:
      raise ValueError(f"{path}: SentencePiece model has no EOS piece")

    def encode_batch(texts):
      return sp.encode(list(texts))  # no BOS/EOS by default; EOS is appended below

    return cls(encode_batch, sp.eos_id(), max(sp.pad_id(), 0), clean, path)

  def tokenize(self, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids per prompt, without EOS and untruncated."""
    if isinstance(prompts, str):
      raise TypeError("expected a list of prompts, got a single string")
    texts = [clean_prompt(p) if self.clean else p for p in prompts]
    return [list(ids) for ids in self._encode_batch(texts)]

  def __call__(self, prompts: Sequence[str], max_length: int = TEXT_LEN):
    if max_length < 1:
      raise ValueError(f"max_length {max_length} must be >= 1")
    pieces = self.tokenize(prompts)
    long = [(len(row), p) for row, p in zip(pieces, prompts) if len(row) > max_length - 1]
    if long:
      tokens, prompt = max(long, key=lambda x: x[0])
      logging.warning(
          "%s truncated to the text encoder's %d tokens (text_encoder.max_length): the longest "
          "has %d tokens (%d characters, %r...); the model reads only their beginning",
          "a prompt was" if len(long) == 1 else f"{len(long)} prompts were", max_length,
          tokens, len(prompt), prompt[:40])
    ids = np.full((len(pieces), max_length), self.pad_id, np.int32)
    mask = np.zeros((len(pieces), max_length), np.bool_)
    for i, row in enumerate(pieces):
      row = row[:max_length - 1] + [self.eos_id]
      ids[i, :len(row)] = row
      mask[i, :len(row)] = True
    return ids, mask


def demo_tokenizer_object(words: Sequence[str]):
  """A tiny `tokenizers` WordLevel tokenizer: <pad>=0, </s>=1, <unk>=2 (the T5 layout), then the
  lower-cased words; splits on whitespace and punctuation and appends </s> like T5's template."""
  from tokenizers import Tokenizer as HFTokenizer
  from tokenizers import models, normalizers, pre_tokenizers, processors
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
  for w in words:
    vocab.setdefault(w.lower(), len(vocab))
  tok = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.normalizer = normalizers.Lowercase()
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(
      single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
  tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
  return tok


def build_demo_tokenizer(words: Sequence[str], out_path: str) -> str:
  """Writes `demo_tokenizer_object(words)` as a tokenizer.json (a file path, or a folder that gets
  tokenizer.json inside; local or gs://). Needs only `tokenizers`, not torch. Returns the file
  written."""
  out_path = str(out_path)
  if fs.isdir(out_path) or not out_path.endswith(".json"):
    out_path = fs.join(out_path, "tokenizer.json")
  return fs.atomic_write_text(out_path, demo_tokenizer_object(words).to_str())
