"""Held-out answers from a Bedrock model through the runtime's Converse API.

The base model and the custom model answer the evaluation rows with the same prompts
as a local run; what is saved has the generation step's shape (``outputs.json`` and
``generations.jsonl``), so the scoring step, the gates and the report are unchanged.

- Calls run with bounded concurrency (``compute.bedrock.max_concurrency`` in flight);
  the answers come back in the rows' order.
- Throttling and a model that is not ready yet are retried with exponential back-off
  and jitter, a bounded number of times; then the run stops with one line naming the
  row. A request the model rejects (``ValidationException``) is one line naming the row.
- Each answer is appended to a JSON-lines file as it arrives, with its row index and a
  digest of the request: running again after Ctrl-C or a crash sends only the rows
  not answered yet (and any row whose request changed).

boto3/botocore are never imported here: the caller passes a ``bedrock-runtime`` client.
Request and response fields: botocore's service model for bedrock-runtime, operation
``Converse`` (modelId, messages, system, inferenceConfig {maxTokens, temperature,
stopSequences}; output.message.content[].text, stopReason).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Sequence

from ftspec.core.errors import RunFailed
from ftspec.core.io import iter_jsonl
from ftspec.data.formatting import prompt_messages, prompt_text, reference
from ftspec.data.prepared import few_shot_records, read_records

# Errors worth another try: the service asks to slow down, or the model is still being
# loaded (ModelNotReadyException, a custom model's first calls). Error codes from
# botocore's service model for bedrock-runtime Converse.
RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailableException", "ModelNotReadyException"})
ATTEMPTS = 8  # tries per row, the first included
BASE_DELAY = 1.0  # seconds before the first retry; doubled each time, with jitter
MAX_DELAY = 60.0
PROGRESS_EVERY = 25  # rows between progress lines


def to_request(prompt: dict, system: str | None) -> tuple[list[dict], list[dict]]:
    """Converse ``messages`` and ``system`` for one prompt: ``{"prompt": text}`` (one user
    turn) or ``{"messages": [{role, content}...]}`` (a chat, cut before its last
    assistant turns; its system message, if any, takes the place of ``system``)."""
    if "messages" in prompt:
        messages = list(prompt["messages"])
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        own = [m["content"] for m in messages if m["role"] == "system"]
        turns = [{"role": m["role"], "content": [{"text": m["content"]}]} for m in messages if m["role"] != "system"]
        texts = own or ([system] if system else [])
    else:
        turns = [{"role": "user", "content": [{"text": prompt["prompt"]}]}]
        texts = [system] if system else []
    return turns, [{"text": t} for t in texts if t]


def request_for(model_id: str, prompt: dict, *, system: str | None, max_tokens: int, stop: Sequence[str],
                temperature: float) -> dict:
    """The Converse parameters for one prompt."""
    messages, system_blocks = to_request(prompt, system)
    config: dict = {"maxTokens": int(max_tokens), "temperature": float(temperature)}
    if stop:
        config["stopSequences"] = list(stop)
    params: dict = {"modelId": model_id, "messages": messages, "inferenceConfig": config}
    if system_blocks:
        params["system"] = system_blocks
    return params


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def _text(response: dict, stop: Sequence[str]) -> str:
    content = ((response.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(block.get("text", "") for block in content if isinstance(block, dict))
    for s in stop:  # as a local run: the answer ends before a stop string
        text = text.split(s, 1)[0]
    return text


def _error(exc: BaseException) -> tuple[str | None, str]:
    """(error code, message) of a botocore ClientError; (None, str) of anything else."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        err = response["Error"]
        return err.get("Code"), " ".join(str(err.get("Message") or "").split())
    return None, " ".join(str(exc).split()) or type(exc).__name__


def saved_answers(path: Path) -> dict[int, dict]:
    """The answers file: row index -> its last saved record. A line cut short by a crash
    is skipped (that row is asked again)."""
    found: dict[int, dict] = {}
    for _, _, record in iter_jsonl(path, lenient=True):
        if isinstance(record, dict) and isinstance(record.get("index"), int) and isinstance(record.get("answer"), str):
            found[record["index"]] = record
    return found


def answer(runtime_client, model_id: str, prompts: list[dict], *, path: Path | str, system: str | None = None,
           max_tokens: int, stop: Sequence[str] = (), temperature: float = 0.0, max_concurrency: int = 4,
           echo: Callable[[str], None] = lambda _: None, attempts: int = ATTEMPTS, base_delay: float = BASE_DELAY,
           max_delay: float = MAX_DELAY, progress_every: int = PROGRESS_EVERY, label: str = "",
           sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
           model_key: str | None = None) -> list[str]:
    """Each prompt's answer from ``model_id`` (greedy by default), in the prompts' order.

    ``path`` is the answers file (JSON lines, appended to as answers arrive); rows already
    answered there with the same request are not sent again. ``label`` names the model in
    progress lines and errors (e.g. "base model"). ``model_key`` is what identifies the
    model in that file (``model_id`` by default): pass the custom model's ARN when
    ``model_id`` is a deployment or provisioned throughput made afresh on each run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stop = [s for s in stop if s]
    requests = [request_for(model_id, p, system=system, max_tokens=max_tokens, stop=stop, temperature=temperature)
                for p in prompts]
    digests = [_digest({**r, "modelId": model_key or model_id}) for r in requests]
    answers: list[str | None] = [None] * len(prompts)
    for i, record in saved_answers(path).items():
        if 0 <= i < len(prompts) and record.get("request") == digests[i]:
            answers[i] = record["answer"]
    todo = [i for i, a in enumerate(answers) if a is None]
    if todo and path.exists() and path.stat().st_size:
        with path.open("rb+") as fh:  # a line cut short by a crash: later answers start on a line of their own
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    who = f"{label} " if label else ""
    if len(todo) < len(prompts):
        echo(f"  {who}{len(prompts) - len(todo)} of {len(prompts)} rows already answered ({path.name}); "
             f"asking for the other {len(todo)}")
    if not todo:
        return [a for a in answers if a is not None]

    rng = rng or random.Random()
    lock = threading.Lock()
    done = [len(prompts) - len(todo)]
    cancelled = threading.Event()

    def ask(i: int) -> None:
        for attempt in range(1, attempts + 1):
            if cancelled.is_set():
                return
            try:
                response = runtime_client.converse(**requests[i])
                break
            except Exception as exc:  # botocore's ClientError, or a connection error
                code, message = _error(exc)
                row = f"{who}row {i + 1} of {len(prompts)}"
                if code in RETRYABLE and attempt < attempts:
                    delay = min(max_delay, base_delay * 2 ** (attempt - 1))
                    sleep(delay / 2 + rng.uniform(0, delay / 2))
                    continue
                cancelled.set()  # the run stops here: rows not sent yet stay unsent
                if code in RETRYABLE:
                    raise RunFailed(f"Bedrock Converse, {row}: still {code} after {attempts} tries ({message}); "
                                    f"lower compute.bedrock.max_concurrency or run again later "
                                    f"(answered rows are kept)") from None
                if code == "ValidationException":
                    raise RunFailed(f"Bedrock Converse, {row}: the model {model_id} "
                                    f"rejected the request: {message}") from None
                raise RunFailed(f"Bedrock Converse, {row}: {code or type(exc).__name__}: {message}") from None
        text = _text(response, stop)
        record = {"index": i, "answer": text, "stop_reason": response.get("stopReason"), "request": digests[i]}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with lock:  # written by the worker, so an answer in flight at Ctrl-C is still kept
            with path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
            answers[i] = text
            done[0] += 1
            if done[0] % max(1, progress_every) == 0 or done[0] == len(prompts):
                echo(f"  {who}{done[0]}/{len(prompts)} rows answered")

    pool = ThreadPoolExecutor(max_workers=max(1, int(max_concurrency)), thread_name_prefix="ftspec-converse")
    try:
        futures = [pool.submit(ask, i) for i in todo]
        wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f.done() and f.exception() is not None:
                raise f.exception()
    except BaseException:
        cancelled.set()  # rows not started are not sent; calls in flight finish and are saved
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [a if a is not None else "" for a in answers]


# --------------------------------------------------------------------------- the generation step's files


def prompts_for(records: list[dict], kind: str, shots: list[dict] = ()) -> list[dict]:
    """Each record's prompt as :func:`answer` takes it, with the same few-shot examples
    before it as a local run (ftspec.runtime.evaluation.evaluate.build_examples)."""
    if kind == "chat":
        return [{"messages": prompt_messages(r, shots)} for r in records]
    return [{"prompt": prompt_text(r, kind, shots)} for r in records]


def _shown(prompt: dict) -> str:
    """A prompt as text, for generations.jsonl (and an LLM judge): a chat's turns, one per line."""
    if "messages" in prompt:
        return "\n".join(f"{m['role']}: {m['content']}" for m in prompt["messages"])
    return prompt["prompt"]


def generate_outputs(runtime_client, model_id: str, e, kind: str, data_dir: Path, answers_path: Path, *,
                     baseline: bool, system: str | None = None, max_concurrency: int = 4,
                     echo: Callable[[str], None] = lambda _: None, **kw) -> tuple[dict, list[dict]]:
    """What ftspec.runtime.evaluation.evaluate.generate_outputs returns, from a Bedrock model: the
    step's ``outputs.json`` and its ``generations.jsonl`` rows. ``e`` is the plan's eval
    section. Only generated answers: Converse gives no token log-probabilities, so
    choices mode, perplexity and preference-pair log-probabilities cannot be computed."""
    outputs = set(e.outputs)
    missing = sorted(outputs - {"answers"})
    if missing or e.mode == "choices":
        what = "choices mode" if e.mode == "choices" else " and ".join(missing)
        raise RunFailed(f"eval: {what} needs the model's token log-probabilities, which Bedrock's Converse API "
                        f"does not return; use eval.mode generate and metrics on the answers")
    records = read_records(Path(data_dir), e.split, e.limit or None)  # only the rows evaluated are read
    shots: list[dict] = []
    if baseline and e.few_shot and "answers" in outputs:  # the same draw as a local run's
        shots = few_shot_records(Path(data_dir), "train", e.few_shot, e.few_shot_seed)
    prompts = prompts_for(records, kind, shots)
    predictions = answer(runtime_client, model_id, prompts, path=answers_path, system=system,
                         max_tokens=e.max_new_tokens, stop=list(e.stop), max_concurrency=max_concurrency, echo=echo,
                         label="base model" if baseline else "custom model", **kw) if "answers" in outputs else None
    summary = {"rows": len(records), "split": e.split, "few_shot": len(shots), "mode": e.mode,
               "outputs": sorted(outputs), "labels": None}
    rows = []
    for i, (r, p) in enumerate(zip(records, prompts)):
        row = {"index": i, "prompt": _shown(p), "reference": reference(kind, r)}
        if predictions is not None:
            row["prediction"] = predictions[i]
        rows.append(row)
    return summary, rows
