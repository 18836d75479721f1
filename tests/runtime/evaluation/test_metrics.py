"""ftspec.runtime.evaluation.scorers against values worked out by hand (the arithmetic is in the comments)."""

import math
import subprocess
import sys

import pytest

from ftspec.catalog import metrics as catalog
from ftspec.runtime.evaluation import scorers as M
from ftspec.runtime.evaluation.extraction import extract
from ftspec.runtime.evaluation.scorers import CLASSIFICATION, MODEL_METRICS, MetricResult, score


def m(name, **kw):
    return {"name": name, "extract": None, **kw}


def regex(pattern, which="last"):
    return {"regex": pattern, "template": None, "which": which}


def template(text):
    return {"regex": None, "template": {"text": text, "source": "inline"}, "which": "last"}


# --------------------------------------------------------------------------- extract


def test_extract_regex_group_and_whole_match():
    text = "a=1, b=22, c=333"
    assert extract(text, regex(r"=(\d+)", "first")) == "1"  # group 1 of the first match
    assert extract(text, regex(r"=(\d+)", "last")) == "333"  # group 1 of the last match
    assert extract(text, regex(r"\w=\d+", "first")) == "a=1"  # no group: the whole match
    assert extract(text, regex(r"\w=\d+", "last")) == "c=333"
    assert extract(text, regex(r"=(\d+)")) == "333"  # `which` defaults to last
    assert extract(text, {"regex": r"=(\d+)"}) == "333"


def test_extract_no_match_and_stripping():
    assert extract("no digits here", regex(r"(\d+)")) == ""
    assert extract("answer:   yes  \n", regex(r"answer:(.*)")) == "yes"  # stripped
    assert extract("x", regex(r"(y)?x")) == ""  # the group did not take part
    assert extract("  plain \n", None) == "plain"


def test_extract_template():
    spec = template("{{ text.split('####')[-1] | trim }}")
    assert extract("Some working.\n#### 42", spec) == "42"
    assert extract("no marker", spec) == "no marker"
    assert extract("ab", {"template": "{{ text | upper }}"}) == "AB"  # the template as plain text


@pytest.mark.parametrize("text", [
    "{{ text.split('####')[1] }}",  # index out of range -> undefined -> error
    "{{ text.split( }}",  # syntax error
    "{{ text.__class__.__mro__ }}",  # refused by the sandbox
    "{{ missing }}",  # undefined variable
    "{{ 1 / 0 }}",
])
def test_extract_template_errors_give_empty(text):
    assert extract("no marker here", template(text)) == ""


def test_gsm8k_last_number():
    # The reference's answer follows '####'; the model's is the last number it writes.
    number = regex(r"(-?\d+(?:\.\d+)?)", "last")
    predictions = [
        "Natalia sold 48 / 2 = 24 clips in May. 48 + 24 = 72. The answer is 72.",
        "She earns 12 / 60 = 0.2 per minute, so 0.2 * 50 = 10.",
        "Betty has 100 / 2 = 50. She needs 100 - 50 - 15 - 30 = 4 more.",
    ]
    references = [
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
        "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10",
        "In the beginning, Betty has only 100 / 2 = $<<100/2=50>>50.\n#### 5",
    ]
    result = score([m("accuracy", extract=number)], predictions, references)
    # extracted: (72, 72), (10, 10), (4, 5) -> 2 of 3 right
    assert [e["accuracy"] for e in result.extracted] == [
        {"prediction": "72", "reference": "72"},
        {"prediction": "10", "reference": "10"},
        {"prediction": "4", "reference": "5"},
    ]
    assert result.aggregate["accuracy"] == pytest.approx(2 / 3)
    assert [p["accuracy"] for p in result.per_example] == [1.0, 1.0, 0.0]


# --------------------------------------------------------------------------- classification

REFS = ["cat", "cat", "cat", "dog", "dog", "bird"]
PREDS = ["cat", "cat", "dog", "dog", "fish", "bird"]
# labels (sorted references): bird, cat, dog; "fish" is outside the label set.
# confusion (rows = reference, columns = bird, cat, dog, (other)):
#   bird: 1 0 0 0
#   cat:  0 2 1 0
#   dog:  0 0 1 1
# bird: TP 1, predicted 1, true 1 -> P 1,   R 1,   F 1
# cat:  TP 2, predicted 2, true 3 -> P 1,   R 2/3, F 2*1*(2/3)/(1+2/3) = 0.8
# dog:  TP 1, predicted 2, true 2 -> P 1/2, R 1/2, F 1/2
# macro P = (1 + 1 + 1/2)/3 = 5/6; macro R = (1 + 2/3 + 1/2)/3 = 13/18; macro F = (1 + 0.8 + 0.5)/3 = 23/30
# micro (over the label set only): TP 4, FP 1 (cat->dog; fish is no label), FN 2 (cat->dog, dog->fish)
#   P = 4/5, R = 4/6, F = 2*4/(2*4 + 1 + 2) = 8/11
# accuracy = 4/6


def test_classification_metrics():
    names = ["accuracy", "precision", "recall", "f1", "f1_macro", "f1_micro"]
    result = score([m(n) for n in names], PREDS, REFS)
    assert result.aggregate == pytest.approx({
        "accuracy": 4 / 6, "precision": 5 / 6, "recall": 13 / 18,
        "f1": 23 / 30, "f1_macro": 23 / 30, "f1_micro": 8 / 11,
    })
    for name in names:
        assert [p[name] for p in result.per_example] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert result.extracted == [{}] * 6


def test_classification_details():
    details = score([m("f1")], PREDS, REFS).details["classification"]
    assert details["labels"] == ["bird", "cat", "dog"]
    assert details["per_label"] == {
        "bird": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1},
        "cat": {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3},
        "dog": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
    }
    cm = details["confusion_matrix"]
    assert cm["labels"] == ["bird", "cat", "dog", "(other)"]
    assert cm["rows"] == ["bird", "cat", "dog"]
    assert cm["matrix"] == [[1, 0, 0, 0], [0, 2, 1, 0], [0, 0, 1, 1]]


def test_no_other_column_when_every_prediction_is_a_label():
    # refs a a b, preds a b b: confusion a: [1 1], b: [0 1]
    # a: P 1/1, R 1/2, F 2/3; b: P 1/2, R 1/1, F 2/3
    result = score([m("accuracy")], ["a", "b", "b"], ["a", "a", "b"])
    cm = result.details["classification"]["confusion_matrix"]
    assert cm == {"labels": ["a", "b"], "rows": ["a", "b"], "matrix": [[1, 1], [0, 1]]}
    assert result.details["classification"]["per_label"]["a"]["f1"] == pytest.approx(2 / 3)
    assert result.aggregate["accuracy"] == pytest.approx(2 / 3)


def test_given_labels_and_whitespace():
    # labels fixed to [neg, neu, pos]; "neu" never occurs. Whitespace around answers is ignored.
    # refs pos pos neg, preds pos neg neg
    # neg: TP 1, predicted 2, true 1 -> P 1/2, R 1, F 2/3
    # neu: nothing -> 0, 0, 0 (zero_division=0)
    # pos: TP 1, predicted 1, true 2 -> P 1, R 1/2, F 2/3
    # macro P = (1/2 + 0 + 1)/3 = 1/2; macro R = (1 + 0 + 1/2)/3 = 1/2; macro F = (2/3 + 0 + 2/3)/3 = 4/9
    result = score([m("precision"), m("recall"), m("f1")], [" pos", "neg\n", "neg"], ["pos ", "pos", "neg"],
                   labels=["neg", "neu", "pos"])
    assert result.aggregate == pytest.approx({"precision": 1 / 2, "recall": 1 / 2, "f1": 4 / 9})
    details = result.details["classification"]
    assert details["labels"] == ["neg", "neu", "pos"]
    assert details["per_label"]["neu"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert details["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 0, 0], [1, 0, 1]]


def test_reference_outside_given_labels_gets_an_other_row():
    result = score([m("accuracy")], ["a", "x", "z"], ["a", "b", "y"], labels=["a", "b"])
    cm = result.details["classification"]["confusion_matrix"]
    assert cm["labels"] == ["a", "b", "(other)"]
    assert cm["rows"] == ["a", "b", "(other)"]
    assert cm["matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]  # y->z: both outside
    assert result.aggregate["accuracy"] == pytest.approx(1 / 3)


def test_accuracy_and_exact_match_agree_on_a_label_in_another_case():
    """'Positive' for 'positive': a label is a label however it is capitalised; every
    classification metric compares labels as accuracy does, and shows them as written."""
    preds, refs = ["Positive", " negative ", "NEGATIVE"], ["positive", "negative", "positive"]
    result = score([m("accuracy"), m("exact_match"), m("f1", positive="Positive")], preds, refs)
    assert result.aggregate["accuracy"] == result.aggregate["exact_match"] == pytest.approx(2 / 3)
    assert result.aggregate["f1"] == pytest.approx(2 / 3)  # 1 true positive, 1 false negative
    assert result.details["classification"]["labels"] == ["negative", "positive"]
    assert result.details["f1"]["positive"] == "positive"
    # Labels given (eval.choices) are normalised alike and shown as given.
    given = score([m("accuracy")], ["yes", "No"], ["Yes", "no"], labels=["Yes", "No"])
    assert given.aggregate["accuracy"] == 1.0 and given.details["classification"]["labels"] == ["Yes", "No"]


@pytest.mark.parametrize("name", sorted(set(M.SCORERS) - {"json_schema"}))
def test_each_scorer_compares_what_its_declared_normalisation_makes_equal(name):
    """The scoring applies the catalog row's normalisation and nothing else: answers its
    function maps to the reference score as the reference itself does."""
    apply = catalog.normalization(name).apply
    ref = ' The  Answer, {"k": 1} '
    variants = [v for v in (ref.upper(), ref.strip(), " ".join(ref.split()), ref.replace(",", ""))
                if apply(v) == apply(ref)]
    assert variants or catalog.get(name).normalization == "as_written"
    for variant in variants:
        assert score([m(name)], [variant], [ref]).aggregate == score([m(name)], [ref], [ref]).aggregate, variant


def test_each_classification_metric_has_its_own_extraction():
    # accuracy on the raw text: 0 of 2 equal; f1 on the extracted letter: 2 of 2 -> macro F 1.
    # The details are those of the first classification metric (accuracy, no extraction).
    letter = regex(r"\(([A-D])\)")
    preds = ["I pick (B)", "It is (C)"]
    refs = ["(B)", "(C)"]
    result = score([m("accuracy"), m("f1", extract=letter)], preds, refs)
    assert result.aggregate == {"accuracy": 0.0, "f1": 1.0}
    assert result.details["classification"]["labels"] == ["(B)", "(C)"]
    assert result.extracted[0] == {"f1": {"prediction": "B", "reference": "B"}}
    assert "accuracy" not in result.extracted[0]


# --------------------------------------------------------------------------- text metrics


def test_exact_match_normalisation():
    # lower-case, no punctuation, no articles, single spaces
    preds = ["The  Eiffel Tower!", "an apple", "Paris", "42."]
    refs = ["eiffel tower", "Apple", "London", "42"]
    result = score([m("exact_match")], preds, refs)
    assert [p["exact_match"] for p in result.per_example] == [1.0, 1.0, 0.0, 1.0]
    assert result.aggregate["exact_match"] == pytest.approx(3 / 4)


def test_token_f1():
    # 1) "the big red dog" vs "a red dog": tokens [big, red, dog] vs [red, dog]; common 2
    #    P 2/3, R 2/2 -> F 2*(2/3)*1/(2/3+1) = 0.8
    # 2) "cat cat dog" vs "cat": common min(2,1)=1 -> P 1/3, R 1 -> F 2*(1/3)/(4/3) = 0.5
    # 3) "" vs "" -> 1.0 (both empty); 4) "the" vs "cat": prediction empty after normalising -> 0.0
    # 5) "x" vs "y": no common token -> 0.0
    preds = ["the big red dog", "cat cat dog", "", "the", "x"]
    refs = ["a red dog", "cat", "", "cat", "y"]
    result = score([m("token_f1")], preds, refs)
    assert [p["token_f1"] for p in result.per_example] == pytest.approx([0.8, 0.5, 1.0, 0.0, 0.0])
    assert result.aggregate["token_f1"] == pytest.approx((0.8 + 0.5 + 1.0) / 5)


def test_rouge_l():
    # "cat on mat" vs "the cat sat on the mat": LCS = cat on mat = 3
    # P = 3/3, R = 3/6 -> F = 2*1*0.5/1.5 = 2/3
    result = score([m("rouge_l")], ["cat on mat", "same words here", "abc"],
                   ["the cat sat on the mat", "same words here", "xyz"])
    assert [p["rouge_l"] for p in result.per_example] == pytest.approx([2 / 3, 1.0, 0.0])
    assert result.aggregate["rouge_l"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)


def test_bleu():
    # Identical -> 1; disjoint -> 0.
    same = score([m("bleu")], ["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same.aggregate["bleu"] == pytest.approx(1.0)
    assert same.per_example[0]["bleu"] == pytest.approx(1.0)
    disjoint = score([m("bleu")], ["a b c d"], ["w x y z"])
    assert disjoint.aggregate["bleu"] == 0.0 and disjoint.per_example[0]["bleu"] == 0.0
    # "the cat sat on the rug" vs "... the mat": n-gram precisions 5/6, 4/5, 3/4, 2/3; equal lengths so BP = 1
    # BLEU = (5/6 * 4/5 * 3/4 * 2/3) ** (1/4) = (1/3) ** (1/4)
    one = score([m("bleu")], ["the cat sat on the rug"], ["the cat sat on the mat"])
    assert one.aggregate["bleu"] == pytest.approx((1 / 3) ** 0.25, abs=1e-6)
    assert one.per_example[0]["bleu"] == pytest.approx((1 / 3) ** 0.25, abs=1e-6)
    # Brevity penalty: a 6-token prefix of an 8-token reference matches every n-gram,
    # so BLEU = BP = exp(1 - 8/6)
    short = score([m("bleu")], ["a b c d e f"], ["a b c d e f g h"])
    assert short.aggregate["bleu"] == pytest.approx(math.exp(1 - 8 / 6), abs=1e-6)


def test_chrf():
    result = score([m("chrf")], ["hello world", "abc def"], ["hello world", "xyz uvw"])
    assert [p["chrf"] for p in result.per_example] == pytest.approx([1.0, 0.0])
    # corpus chrF pools the character n-gram counts; it lies strictly between the two
    assert 0.0 < result.aggregate["chrf"] < 1.0
    assert score([m("chrf")], ["hello world"], ["hello world"]).aggregate["chrf"] == pytest.approx(1.0)


def test_json_valid():
    # raw: {"a": 1}, [1, 2] and "  3 " (stripped) parse; single quotes, prose and a fenced block do not -> 3/6
    fenced = regex(r"(?s)```(?:json)?\s*(.*?)```")  # (?s): the block spans lines
    preds = ['{"a": 1}', "[1, 2]", "  3 ", "{'a': 1}", "not json", "Here:\n```json\n{\"b\": 2}\n```"]
    raw = score([m("json_valid")], preds, [""] * 6)
    assert [p["json_valid"] for p in raw.per_example] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert raw.aggregate["json_valid"] == pytest.approx(3 / 6)
    pulled = score([m("json_valid", extract=fenced)], preds[5:], [""])
    assert pulled.aggregate["json_valid"] == 1.0
    assert pulled.extracted[0]["json_valid"]["prediction"] == '{"b": 2}'


SCHEMA = """{
  "type": "object",
  "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
  "required": ["name"],
  "additionalProperties": false
}"""


def test_json_schema():
    metric = m("json_schema", schema={"path": "person.schema.json", "text": SCHEMA, "sha256": "x"})
    preds = [
        '{"name": "Ada", "age": 36}',  # valid
        '{"name": "Bob"}',  # valid: age is optional
        '{"age": 3}',  # missing name
        '{"name": "Cy", "age": -1}',  # below minimum
        '{"name": "Di", "extra": 1}',  # additional property
        "{name: 'Ed'}",  # not JSON
    ]
    result = score([metric, m("json_valid")], preds, [""] * 6)
    assert [p["json_schema"] for p in result.per_example] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert result.aggregate == pytest.approx({"json_schema": 2 / 6, "json_valid": 5 / 6})


def test_json_schema_bad_schema():
    with pytest.raises(ValueError, match="not valid JSON"):
        score([m("json_schema", schema={"text": "{nope"})], ["{}"], [""])
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        score([m("json_schema", schema={"text": '{"type": 12}'})], ["{}"], [""])


# --------------------------------------------------------------------------- score() itself


def test_empty_inputs_give_none():
    names = ["accuracy", "f1", "exact_match", "token_f1", "rouge_l", "bleu", "chrf", "json_valid", "perplexity"]
    metrics = [m(n) for n in names] + [m("json_schema", schema={"text": SCHEMA})]
    result = score(metrics, [], [])
    assert result == MetricResult(
        aggregate={n: None for n in names if n != "perplexity"} | {"json_schema": None},
        per_example=[], extracted=[], details={})


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric: bleurt"):
        score([m("accuracy"), m("bleurt")], ["a"], ["a"])


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score([m("accuracy")], ["a", "b"], ["a"])


def test_model_metrics_are_skipped():
    metrics = [m("perplexity"), {"name": "judge", "model": "x", "rubric": "r"}, m("exact_match")]
    result = score(metrics, ["A"], ["a"])
    assert result.aggregate == {"exact_match": 1.0}
    assert result.per_example == [{"exact_match": 1.0}]
    assert MODEL_METRICS == {"perplexity", "judge"}
    assert CLASSIFICATION == {"accuracy", "precision", "recall", "f1", "f1_macro", "f1_micro"}


def test_no_classification_details_without_classification_metrics():
    assert score([m("exact_match")], ["a"], ["a"]).details == {}


def test_import_is_light():
    code = ("import sys, ftspec.runtime.evaluation.scorers, ftspec.runtime.evaluation.baseline, "
            "ftspec.runtime.evaluation.intervals; "
            "heavy = {'torch', 'sklearn', 'sacrebleu', 'rouge_score', 'jsonschema'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_regex_that_backtracks_without_end_gives_no_match():
    """A spec's extraction regex meets whatever the model wrote: (a|aa)+$ on forty a's and a
    '!' backtracks for ages in `re`; here it gives up after REGEX_SECONDS and counts as no match."""
    import threading

    hang = 60.0  # a hang detector, not a speed claim
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.append(extract("a" * 40 + "!", {"regex": r"(a|aa)+$"})),
                              daemon=True)
    worker.start()
    worker.join(hang)
    assert not worker.is_alive(), "the match never gave up"
    assert answers == [""]
    assert extract("answer: 42", {"regex": r"answer: (\d+)"}) == "42"  # and a sane one still matches


def test_an_extraction_that_finds_nothing_is_a_miss_even_against_an_empty_reference():
    spec = {"regex": r"answer: (\d+)"}
    metrics = [{"name": "exact_match", "extract": spec}, {"name": "accuracy", "extract": spec}]
    result = score(metrics, ["I do not know", "answer: 4"], ["no answer given here", "answer: 4"])
    assert result.aggregate["exact_match"] == 0.5 and result.aggregate["accuracy"] == 0.5
    assert [row["exact_match"] for row in result.per_example] == [0.0, 1.0]
    assert result.extracted[0]["exact_match"] == {"prediction": "", "reference": ""}  # shown as found
    assert result.details["extraction"]["exact_match"] == {"predictions_without_answer": 1,
                                                           "references_without_answer": 1}
    # without an extraction, an empty answer against an empty reference is still equal text
    assert score([{"name": "exact_match"}], [""], [""]).aggregate["exact_match"] == 1.0
