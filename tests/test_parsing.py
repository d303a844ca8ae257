import pytest

from tapir.pipelines.parsing import (
    parse_expanded_instruction,
    parse_judge_score,
    parse_refined_response,
    parse_response,
    parse_task_label,
)

LABELS = ["Math", "Code Generation", "Code Debug", "Reasoning", "Others"]


@pytest.mark.parametrize(
    ("text", "value", "error"),
    [
        ("Rating: [[7]]", 7.0, None),
        ("The answer is clear and correct.\n\nRating: [[9]]", 9.0, None),
        ("Good effort [[6.5]] overall", 6.5, None),
        ("Rating: [8]", 8.0, None),  # fschat's single-bracket backup
        ("rating: 4", 4.0, None),  # judges that drop the brackets
        ("Rating: [[10]] (not [[3]])", 10.0, None),  # the first verdict wins, as in fschat
        ("Rating: [[11]]", None, "score 11 outside 1-10"),
        ("Rating: [[0]]", None, "score 0 outside 1-10"),
        ("I would rate it highly.", None, "no rating found"),
        ("", None, "empty output"),
        ("   \n", None, "empty output"),
        (None, None, "no output (the LLM call failed)"),
    ],
)
def test_judge_score(text, value, error):
    parsed = parse_judge_score(text)
    assert parsed.value == value
    assert parsed.error == error
    assert parsed.ok is (error is None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Math", "Math"),
        ("math", "Math"),
        ("  Code Debug.\n", "Code Debug"),
        ('"Reasoning"', "Reasoning"),
        ("Task: Code Generation", "Code Generation"),
        ("This request is about Code Debug, not Math.", "Code Debug"),
        ("The category is Math.", "Math"),
    ],
)
def test_task_label_good_and_noisy(text, value):
    assert parse_task_label(text, LABELS).value == value


@pytest.mark.parametrize(
    ("text", "error_start"),
    [
        ("Poetry", "not a known task label"),
        ("Mathematics", "not a known task label"),
        ("", "empty output"),
        (None, "no output"),
    ],
)
def test_task_label_failures_are_reported_not_defaulted(text, error_start):
    parsed = parse_task_label(text, LABELS)
    assert parsed.value is None
    assert parsed.error.startswith(error_start)


def test_response_cuts_a_new_turn_and_rejects_empty():
    assert parse_response("Paris.\n\n### Instruction:\nName a city").value == "Paris."
    assert parse_response("x = 7\n### Instructions:\nmore").value == "x = 7"
    assert parse_response("### Response: hi").error == "empty output after removing a new-turn marker"
    assert parse_response("").error == "empty output"
    assert parse_response(None).error.startswith("no output")


@pytest.mark.parametrize(
    ("text", "value", "error"),
    [
        (
            "New instruction: Compute the area of a circle of radius 3.",
            "Compute the area of a circle of radius 3.",
            None,
        ),
        ('"List three prime numbers above 50."', "List three prime numbers above 50.", None),
        ("Solve 2x + 1 = 5 for x.\n### Response:\nx=2", "Solve 2x + 1 = 5 for x.", None),
        ("Hi", None, "too short to be an instruction: 'Hi'"),
        ("Solve for x: 3x + 7 = 22.", None, "copy of the seed instruction"),
        ("", None, "empty output"),
    ],
)
def test_expanded_instruction(text, value, error):
    parsed = parse_expanded_instruction(text, seed_instruction="Solve for x: 3x + 7 = 22.")
    assert (parsed.value, parsed.error) == (value, error)


def test_refined_response_strips_label():
    assert parse_refined_response("Improved response: Step 1 ...").value == "Step 1 ..."
    assert parse_refined_response("Refined response:   ").error is not None
    assert parse_refined_response(None).error.startswith("no output")
