"""Every metric a spec may name, in one table: what it measures, which way is better,
and what the evaluated model must produce for it.

The schema accepts exactly these names, the compiler derives ``eval.outputs`` from them,
the checks and the report read their family and direction here, and
:mod:`ftspec.runtime.evaluation.scorers` holds an implementation for each metric scored
from answers. Adding a metric: one row here, and (for a metric scored from answers) its
function registered in ``SCORERS`` there.

Families:

- ``classification``: the answer is a label; scored over the confusion matrix.
- ``text``: the answer is free text, compared with the reference or checked on its own.
- ``model``: needs a model beside the answers: the evaluated model's token probabilities
  (``perplexity``) or an LLM judge.
- ``preference``: preference pairs (``format.kind: preference``), scored by the
  log-probabilities of the chosen and the rejected answer, not by a generated answer.
- ``feedback``: unpaired feedback rows (``format.kind: feedback``), scored by the
  log-probability of each row's completion, the desirable rows' against the undesirable ones'.
- ``reward_model``: preference pairs scored by a trained reward model (``method.kind:
  reward_model``): its score of the chosen answer against the rejected one's.

No metric is tied to an ``eval.mode``: in ``choices`` mode the chosen label is the answer
that every answer metric scores.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Callable, Literal

Family = Literal["classification", "text", "model", "preference", "feedback", "reward_model"]
# What the generation steps compute with the evaluated model for a metric (the plan's eval.outputs).
Output = Literal["answers", "perplexity", "pair_logprobs", "completion_logprobs", "pair_scores"]
OUTPUTS: tuple[Output, ...] = ("answers", "perplexity", "pair_logprobs", "completion_logprobs", "pair_scores")


@dataclass(frozen=True)
class Normalization:
    """How an answer and its reference are put before a metric compares them: the plan
    shows ``what``, and the scoring applies ``apply`` to both (one function each, so the
    two cannot disagree)."""

    name: str
    what: str
    apply: Callable[[str], str]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def _label(text: str) -> str:
    return " ".join(text.split()).casefold()


def _squad(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _as_written(text: str) -> str:
    return text


NORMALIZATIONS: dict[str, Normalization] = {n.name: n for n in (
    # A label is a label however the model capitalises or spaces it ('Positive' is 'positive'):
    # what a reader of a classification score expects; the labels' own punctuation still counts.
    Normalization("label", "case-insensitively, after trimming and collapsing whitespace", _label),
    Normalization("squad", "lower-cased, without punctuation or articles (a, an, the), whitespace collapsed "
                           "(SQuAD's normalisation)", _squad),
    Normalization("trimmed", "as written, after trimming surrounding whitespace", str.strip),
    Normalization("as_written", "as written (the metric tokenises them itself)", _as_written),
)}


@dataclass(frozen=True)
class Metric:
    name: str
    family: Family
    what: str  # in words, for a reader of the table
    # How answers and references are normalised before they are compared (a key of
    # NORMALIZATIONS); None for a metric not computed from the answers' text.
    normalization: str | None = None
    output: Output = "answers"
    higher_is_better: bool = True
    # Whether each row's reference answer is compared with (json_valid checks the answer alone).
    reference: bool = True
    # Keys the spec must give beside the name ({name: judge, model: …, rubric: …}).
    settings: tuple[str, ...] = ()
    # Measured against the base model (eval.baseline: true).
    baseline: bool = False
    # Scores one answer on its own (against its reference): a GRPO reward can be this metric.
    reward: bool = False


# In the order the schema lists them (its JSON Schema's enum and its error messages).
METRICS: tuple[Metric, ...] = (
    Metric("accuracy", "classification", "share of answers equal to the reference label", "label", reward=True),
    Metric("precision", "classification", "precision per label, averaged over the labels (macro)", "label"),
    Metric("recall", "classification", "recall per label, averaged over the labels (macro)", "label"),
    Metric("f1", "classification", "F1 of the positive label (two labels), else averaged over the labels", "label"),
    Metric("f1_macro", "classification", "F1 per label, averaged over the labels", "label"),
    Metric("f1_micro", "classification", "F1 over every answer at once", "label"),
    Metric("exact_match", "text", "share of answers equal to the reference", "squad", reward=True),
    Metric("token_f1", "text", "F1 of the answer's words against the reference's (SQuAD)", "squad", reward=True),
    Metric("rouge_l", "text", "ROUGE-L F-measure: the longest common word sequence", "as_written", reward=True),
    Metric("bleu", "text", "corpus BLEU (sacrebleu), 0..1; as a reward, each answer's sentence BLEU", "as_written",
           reward=True),
    Metric("chrf", "text", "corpus chrF (sacrebleu), 0..1; as a reward, each answer's sentence chrF", "as_written",
           reward=True),
    Metric("perplexity", "model", "perplexity of the reference answers under the evaluated model",
           output="perplexity", higher_is_better=False),
    Metric("json_valid", "text", "share of answers that parse as JSON", "trimmed", reference=False, reward=True),
    Metric("json_schema", "text", "share of answers that are JSON valid against a JSON Schema", "trimmed",
           reference=False, settings=("schema",), reward=True),
    Metric("judge", "model", "an LLM judge's score of each answer with a rubric, mapped to 0..1",
           reference=False, settings=("model", "rubric")),
    Metric("preference_accuracy", "preference", "share of pairs whose chosen answer the model finds likelier",
           output="pair_logprobs", reference=False),
    Metric("logprob_margin", "preference", "mean log p(chosen) - log p(rejected)",
           output="pair_logprobs", reference=False),
    Metric("reward_accuracy", "preference", "share of pairs whose chosen answer gets the higher DPO reward "
           "(beta x log-ratio to the base model)", output="pair_logprobs", reference=False, baseline=True),
    Metric("reward_margin", "preference", "mean DPO reward margin of the chosen over the rejected answer",
           output="pair_logprobs", reference=False, baseline=True),
    Metric("feedback_margin", "feedback", "mean log p(completion) of the desirable rows - of the undesirable rows",
           output="completion_logprobs", reference=False),
    Metric("pair_accuracy", "reward_model", "share of pairs whose chosen answer the reward model scores higher "
           "(chance: 0.5)", output="pair_scores", reference=False),
    Metric("pair_margin", "reward_model", "mean reward model score of the chosen answer - of the rejected answer",
           output="pair_scores", reference=False),
)

_BY_NAME = {m.name: m for m in METRICS}


def get(name: str) -> Metric:
    """The metric named ``name``; KeyError for a name that is not in the catalog."""
    return _BY_NAME[name]


def names(family: Family | None = None, output: Output | None = None, reward: bool | None = None) -> tuple[str, ...]:
    """The metrics' names, in the table's order: all, or those of a family, needing an output, or
    (``reward``) that can score one answer as a GRPO reward."""
    return tuple(m.name for m in METRICS
                 if (family is None or m.family == family) and (output is None or m.output == output)
                 and (reward is None or m.reward == reward))


def lower_is_better() -> frozenset[str]:
    """The metrics where a lower value is the better one."""
    return frozenset(m.name for m in METRICS if not m.higher_is_better)


def outputs(metric_names: set[str] | list[str] | tuple[str, ...]) -> list[Output]:
    """What the evaluated model must produce for these metrics, in the plan's order."""
    wanted = {_BY_NAME[n].output for n in metric_names}
    return [o for o in OUTPUTS if o in wanted]


def normalization(name: str) -> Normalization | None:
    """How the metric ``name`` normalises answers and references before comparing them."""
    key = _BY_NAME[name].normalization
    return NORMALIZATIONS[key] if key is not None else None
