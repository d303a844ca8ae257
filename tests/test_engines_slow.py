"""The embedded model's real llama.cpp engine (slow tier): one server for every role, grammars
sent per request keep judge and classifier answers parseable, and the server dies with tapir."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tapir.expected_score import expected_score
from tapir.pipelines.parsing import parse_judge_score, parse_task_label
from tapir.recipe import ModelSpec
from tapir.serving.engines import EngineSet
from tapir.serving.llm_factory import LLMContext, build_llm, choice_constraint, score_constraint
from tapir.serving.llms import TOP_LOGPROBS
from tests.test_engines import _alive, _wait_dead

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "tapir"


def test_one_llamacpp_engine_serves_every_role_and_grammars_travel_per_request(tmp_path):
    spec = ModelSpec(backend="llamacpp", model="embedded")
    labels = ["Math", "Writing", "Code Generation"]
    with EngineSet(CACHE, log_dir=tmp_path) as engines:
        context = LLMContext(cache_dir=tmp_path, engines=engines)
        teacher = build_llm(spec, "teacher", context, max_new_tokens=32)
        judge = build_llm(spec, "judge", context, temperature=1.0, constraint=score_constraint())
        classifier = build_llm(spec, "judge", context, temperature=0.0, constraint=choice_constraint(labels))
        expecting = build_llm(
            spec, "judge", context, temperature=0.0, constraint=score_constraint(), top_logprobs=20
        )
        assert len(engines.plan()) == 1
        engines.start()
        assert len(engines.pids()) == 1
        for llm in (teacher, judge, classifier, expecting):
            llm.load()
        question = [{"role": "user", "content": "What is 2 + 2? Explain briefly."}]
        answer = teacher.generate_outputs(inputs=[question])[0]["generations"][0]
        assert answer and answer.strip()
        grade = [{"role": "user", "content": f"Rate this answer from 1 to 10.\n\n{answer}\n\nRating:"}]
        verdicts = judge.generate_outputs(inputs=[grade, grade, grade])
        assert all(parse_judge_score(v["generations"][0]).value is not None for v in verdicts)
        # llama.cpp's own server returns no log-probabilities without logits_all; tapir's serves
        # the top alternatives of each answer token, and the grade becomes an expectation.
        (with_logprobs,) = expecting.generate_outputs(inputs=[grade])
        tokens = with_logprobs[TOP_LOGPROBS][0]
        assert "".join(t["token"] for t in tokens) == with_logprobs["generations"][0]
        expected = expected_score(tokens)
        assert expected.ok, expected.error
        assert 1 <= expected.value.value <= 10 and expected.value.mass > 0.3
        label = [{"role": "user", "content": "Categories: Math, Writing, Code Generation\nRequest: 2 + 2?"}]
        text = classifier.generate_outputs(inputs=[label])[0]["generations"][0]
        assert parse_task_label(text, labels).value in labels


OWNER = """
import sys, time
from pathlib import Path
from tapir.serving.engines import EngineSet
from tapir.recipe import ModelSpec
engines = EngineSet(Path(sys.argv[1]), log_dir=Path(sys.argv[2]))
engines.ensure(ModelSpec(backend="llamacpp", model="embedded"), "judge")
engines.start()
print(engines.pids()[0], flush=True)
time.sleep(600)
"""


def test_the_llamacpp_server_dies_with_a_killed_tapir(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(CACHE), str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    server = int(owner.stdout.readline())
    assert _alive(server)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=30)
    assert _wait_dead(server)


def test_the_embedded_instruct_teacher_answers_in_its_own_format_and_stops(tmp_path):
    """SmolLM2-135M-Instruct from the PyPI package, on its own engine beside the base model's:
    its GGUF's chat template, no stop strings needed, the answer ends (EOS) before the cap."""
    from tapir.serving.engines import resolved_template

    teacher = ModelSpec(backend="llamacpp", model="embedded-instruct")
    student = ModelSpec(backend="llamacpp", model="embedded")
    assert resolved_template(teacher) is None and resolved_template(student) is not None
    with EngineSet(CACHE, log_dir=tmp_path) as engines:
        context = LLMContext(cache_dir=tmp_path, engines=engines)
        llm = build_llm(teacher, "teacher", context, max_new_tokens=200, temperature=0.0)
        build_llm(student, "student", context)
        assert len(engines.plan()) == 2  # one engine per distinct model
        engines.start()
        llm.load()
        question = [{"role": "user", "content": "Name three primary colours."}]
        (output,) = llm.generate_outputs(inputs=[question])
        answer = output["generations"][0]
        assert answer.strip() and "<|im_start|>" not in answer and "### Instruction" not in answer
        assert output["statistics"]["output_tokens"][0] < 200  # it ended by itself
        assert llm.model_id.startswith("HuggingFaceTB/SmolLM2-135M-Instruct")
