"""``backend="tagger"``: negation and uncertainty from a token-classification model in the
format of BSC's negation tagger (``BSC-NLP4BIA/negation-tagger``): BIO labels over ``NEG``
(negation cue), ``NSCO`` (its scope), ``UNC`` (uncertainty cue) and ``USCO`` (its scope).

A span overlapping a negation scope is negated, one overlapping an uncertainty scope
uncertain; the cue nearest the scope in its sentence becomes the span's ``dt4h_cues``. The
model reads each sentence's words (the first sub-word's label is the word's), truncated to
the model's length.
"""

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from spacy.tokens import Doc

from ...checkpoint import hub_unreachable
from ...errors import CheckpointError
from ...spans import word_tokens
from .rules import ContextRule

CUE_OF_SCOPE = {"NSCO": "NEG", "USCO": "UNC"}
CATEGORY = {"NSCO": "NEGATED_EXISTENCE", "USCO": "POSSIBLE_EXISTENCE"}
WORDS_PER_PASS = 400  # sentence words read at once (sub-words are truncated to the model's length)


class NegationTagger:
    """A loaded tagger: tokenizer, model and the tag name (``NEG``, ``NSCO``…) of each label id."""

    def __init__(self, model: torch.nn.Module, tokenizer, tags: Dict[int, str], device: str = "cpu") -> None:
        self.model, self.tokenizer, self.tags, self.device = model.eval().to(device), tokenizer, tags, device

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu") -> "NegationTagger":
        """A local folder, or a hub id (needs the network or the local cache; offline, a clear error)."""
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        if not Path(name_or_path).expanduser().exists() and hub_unreachable(name_or_path, "config.json"):
            raise CheckpointError(
                f"The negation tagger {name_or_path!r} is not in the local Hugging Face cache and the Hub cannot be "
                "reached (offline). Download it once (huggingface-cli download) and pass its folder as "
                "`tagger_model`, or use backend=\"rules\".")
        try:
            model = AutoModelForTokenClassification.from_pretrained(name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
        except OSError as err:
            raise CheckpointError(f"Cannot load the negation tagger {name_or_path!r}: {err}") from err
        tags = {int(i): str(label).split("-", 1)[-1].upper() for i, label in model.config.id2label.items()}
        unknown = sorted(set(tags.values()) - {"O", "NEG", "NSCO", "UNC", "USCO"})
        if unknown:
            raise CheckpointError(f"{name_or_path}: labels {unknown} are not those of a negation tagger (B-/I- NEG, "
                                  "NSCO, UNC, USCO and O).")
        return cls(model, tokenizer, tags, device)

    @torch.inference_mode()
    def word_tags(self, words: Sequence[str]) -> List[str]:
        """The tag (``O``, ``NEG``, ``NSCO``, ``UNC``, ``USCO``) of each word."""
        tags = ["O"] * len(words)
        for begin in range(0, len(words), WORDS_PER_PASS):
            chunk = list(words[begin:begin + WORDS_PER_PASS])
            encoded = self.tokenizer(chunk, is_split_into_words=True, truncation=True, return_tensors="pt")
            logits = self.model(**{k: v.to(self.device) for k, v in encoded.items()}).logits[0]
            best = logits.argmax(-1).tolist()
            seen = set()
            for position, word in enumerate(encoded.word_ids()):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[begin + word] = self.tags[best[position]]
        return tags


def _runs(tags: Sequence[str], indices: Sequence[int], wanted: str) -> List[Tuple[int, int]]:
    """Token ranges of consecutive words tagged ``wanted``."""
    runs: List[Tuple[int, int]] = []
    for tag, index in zip(tags, indices):
        if tag != wanted:
            continue
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


def tagger_triggers(tagger: NegationTagger, docs: Sequence[Doc], sentence_ids) -> List[list]:
    """One trigger per tagged scope of each doc, its cue the nearest cue of the same kind in the sentence."""
    from .component import Trigger

    found: List[list] = []
    for doc in docs:
        words = word_tokens(doc).tolist()
        ids = sentence_ids(doc)
        triggers = []
        for sentence in sorted(set(int(ids[i]) for i in words)):
            indices = [i for i in words if ids[i] == sentence]
            tags = tagger.word_tags([doc[i].text for i in indices])
            for scope_tag, cue_tag in CUE_OF_SCOPE.items():
                cues = _runs(tags, indices, cue_tag)
                for start, end in _runs(tags, indices, scope_tag):
                    cue: Optional[Tuple[int, int]] = min(cues, key=lambda c: min(abs(c[0] - end), abs(c[1] - start)),
                                                        default=None)
                    cue_start, cue_end = cue if cue is not None else (start, start)
                    rule = ContextRule(CATEGORY[scope_tag], "FORWARD", literal=doc[cue_start:cue_end].text or cue_tag,
                                       source=f"tagger {cue_tag}")
                    triggers.append(Trigger(rule, cue_start, cue_end, start, end))
        found.append(triggers)
    return found
