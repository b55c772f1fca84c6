"""Answer extraction cascade and verification (docs/architecture.md §6, issue 2 parts 6-7).

Tables: (response text, expected extracted value or None, expected rule).  They include the failure cases
reported against lm-eval-harness (first-match regex picking a restated number, a comma swallowing the GSM8K
answer, few-shot run-on after "####") and Math-Verify ("0,1" read as 0.1 / 01, ``pi/2`` parsed as p*i/2,
power towers hanging sympy without a timeout).
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from compress_distill import answers
from compress_distill.answers import Extraction, Grade, extract_answer, grade, is_correct

THINK = "<think>\nLet me think. 3 + 4 = 7, so maybe 7? The answer is 12. Or (A)? Yes, no, true.\n</think>\n\n"

# --------------------------------------------------------------------------------------------------------
# numeric extraction
# --------------------------------------------------------------------------------------------------------

NUMERIC = [
    # explicit markers
    ("The answer is 18.", "18", "answer_is"),
    ("#### 72", "72", "hash"),
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18", "hash"),
    ("So the result is \\boxed{72}.", "72", "boxed"),
    ("$\\boxed{\\frac{3}{4}}$", "0.75", "boxed"),
    ("\\boxed{\\dfrac{1}{2}}", "0.5", "boxed"),
    ("\\boxed{\\text{18 apples}}", "18", "boxed"),
    ("\\boxed{18 \\text{ apples}}", "18", "boxed"),
    ("\\fbox{12}", "12", "boxed"),
    ("\\boxed {7}", "7", "boxed"),
    ("\\boxed{5} ... wait, that is wrong: \\boxed{6}", "6", "boxed"),
    ("The answer is 5. Actually, \\boxed{6}", "6", "boxed"),
    ("\\boxed{\\text{none}} but 3 + 4 = 7", "7", "last_number"),  # an unparsable box falls through
    ("**Final Answer:** 42", "42", "answer_is"),
    ("**Answer**: 42", "42", "answer_is"),
    ("The final answer is: **$42**", "42", "answer_is"),
    ("Final Answer\n\n42", "42", "answer_is"),
    ("The answer is 5. Wait, let me recheck. The answer is 6.", "6", "answer_is"),  # the LAST statement
    ("The answer is 18, which is 3 more than 15.", "18", "answer_is"),
    ("The answer is 7 (since 10 - 3 = 7).", "7", "answer_is"),
    ("The answer is x = -2.", "-2", "answer_is"),
    ("The answer is 2 + 3 = 5", "5", "answer_is"),
    ("The answer would be 9 cookies.", "9", "answer_is"),
    # restated numbers / first-match failure (lm-eval-harness #2278)
    (
        "Toula pays 3 * $68 = $204, 2 * $80 = $160 and 6 * $55 = $330, so $204 + $160 + $330 = $694 in total.",
        "694",
        "last_number",
    ),
    ("She has 16 eggs, eats 3, bakes 4, sells 9 at $2: she makes $18.", "18", "last_number"),
    (THINK + "So she makes 18 dollars.", "18", "last_number"),
    (THINK + "#### 20", "20", "hash"),
    # commas: thousands groups of exactly 3 digits, otherwise a list
    ("The total is $1,000.50.", "1000.5", "last_number"),
    ("Total: $1,234,567", "1234567", "last_number"),
    ("The answer is 1,000", "1000", "answer_is"),
    ("The answer is 10,000 dollars.", "10000", "answer_is"),
    ("#### 0,1", "0,1", "hash"),
    ("The solutions are 0,1", "0,1", "last_number"),
    ("The roots are 0, 1.", "0,1", "last_number"),
    ("\\boxed{0,1}", "0,1", "boxed"),
    ("The answer is 1,00", "1,0", "answer_is"),
    ("The answer is 0,100", "0,100", "answer_is"),
    ("The answer is 12,34", "12,34", "answer_is"),
    ("The total is 72 clips, altogether.", "72", "last_number"),  # a trailing comma is not a list
    ("After 3 days, 5 more arrive.", "5", "last_number"),
    ("1{,}000 people came: \\boxed{1{,}000}", "1000", "boxed"),
    ("\\boxed{1\\,000}", "1000", "boxed"),
    # currency, percent, units
    ("It costs €20.", "20", "last_number"),
    ("It costs £5.50 each.", "5.5", "last_number"),
    ("The answer is $-5.", "-5", "answer_is"),
    ("He lost -$5 today", "-5", "last_number"),
    ("The answer is 50%.", "50", "answer_is"),
    ("\\boxed{50\\%}", "50", "boxed"),
    ("It goes 60 km/h.", "60", "last_number"),
    ("The area is 25 cm^2.", "25", "last_number"),
    ("The area is 25 m².", "25", "last_number"),
    ("\\boxed{90^\\circ}", "90", "boxed"),
    ("It weighs 18.00 kg.", "18", "last_number"),
    # negatives
    ("The answer is -3.", "-3", "answer_is"),
    ("The answer is \u22123.", "-3", "answer_is"),
    ("The temperature fell to -12 degrees.", "-12", "last_number"),
    ("We compute 5-3=2.", "2", "last_number"),
    ("\\boxed{-0.5}", "-0.5", "boxed"),
    # fractions, mixed numbers, scientific notation, decimals
    ("The answer is 3/4.", "0.75", "answer_is"),
    ("The answer is 1 1/2 cups.", "1.5", "answer_is"),
    ("\\boxed{1\\frac{1}{2}}", "1.5", "boxed"),
    ("\\boxed{\\frac12}", "0.5", "boxed"),
    ("\\boxed{\\frac{1}{3}}", "0.333333333333333", "boxed"),
    ("\\boxed{\\frac{-3}{4}}", "-0.75", "boxed"),
    ("It is 1e3", "1000", "last_number"),
    ("It is 2.5e-3 m", "0.0025", "last_number"),
    ("It is 1.5 × 10^3", "1500", "last_number"),
    ("\\boxed{3 \\times 10^{-2}}", "0.03", "boxed"),
    ("The answer is .5", "0.5", "answer_is"),
    ("The answer is 0.50.", "0.5", "answer_is"),
    ("The answer is 18.", "18", "answer_is"),  # trailing period is not a decimal point
    # markdown, unicode, run-on
    ("**18**", "18", "last_number"),
    ("The answer is **18**.", "18", "answer_is"),
    ("The answer is \uff11\uff18.", "18", "answer_is"),  # full-width digits
    ("#### 18\n\nQuestion: Tom has 5 apples and buys 5 more. How many?\nAnswer: 10\n#### 10", "18", "hash"),
    ("#### Step 1\nWe have 7 apples.", "7", "last_number"),  # a markdown heading is not GSM8K's marker
    # nothing to extract
    ("I cannot determine the value.", None, None),
    ("The answer is 1/0", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("text", "value", "rule"), NUMERIC)
def test_numeric_extraction(text: str, value: str | None, rule: str | None) -> None:
    found = extract_answer(text, "numeric")
    if value is None:
        assert found is None
    else:
        assert found == Extraction(value, rule)


# a marked answer written as an arithmetic expression is graded by its value, not by its first number
NUMERIC_EXPRESSIONS = [
    ("\\boxed{2^{10}}", "1024", "boxed"),
    ("\\boxed{2^10}", "1024", "boxed"),  # plain-text reading: the whole digit run is the exponent
    ("\\boxed{10^{3}}", "1000", "boxed"),
    ("\\boxed{2^{-2}}", "0.25", "boxed"),
    ("\\boxed{-2^{2}}", "-4", "boxed"),  # the power binds tighter than the sign
    ("\\boxed{(-2)^{3}}", "-8", "boxed"),
    ("\\boxed{2^{3^{2}}}", "512", "boxed"),  # right-associative
    ("\\boxed{\\frac{\\sqrt{8}}{2}}", "1.4142135623731", "boxed"),
    ("\\boxed{\\frac{\\sqrt{16}}{2}}", "2", "boxed"),
    ("\\boxed{\\sqrt{2}}", "1.4142135623731", "boxed"),
    ("\\boxed{3\\sqrt{4}}", "6", "boxed"),
    ("\\boxed{\\sqrt[3]{27}}", "3", "boxed"),
    ("\\boxed{8^{1/3}}", "2", "boxed"),
    ("\\boxed{3\\cdot 4}", "12", "boxed"),
    ("\\boxed{3 \\times 4}", "12", "boxed"),
    ("\\boxed{3 * 4}", "12", "boxed"),
    ("\\boxed{12 \\div 4}", "3", "boxed"),
    ("\\boxed{5+3}", "8", "boxed"),
    ("\\boxed{5-3}", "2", "boxed"),  # math mode: a minus
    ("\\boxed{2(3+4)}", "14", "boxed"),
    ("\\boxed{\\left(\\frac{1}{2}\\right)^{2}}", "0.25", "boxed"),
    ("\\boxed{\\frac{1}{2}+\\frac{1}{3}}", "0.833333333333333", "boxed"),
    ("\\boxed{\\frac{2^{3}}{4}}", "2", "boxed"),
    ("\\boxed{5!}", "120", "boxed"),
    ("\\boxed{\\frac{10!}{3!\\,7!}}", "120", "boxed"),
    ("\\boxed{x = 2^{3}}", "8", "boxed"),  # right-hand side first, then its value
    ("\\boxed{12 \\cdot 5 = 60}", "60", "boxed"),
    ("$\\boxed{2^{5}}$ apples", "32", "boxed"),
    ("The answer is 2^5.", "32", "answer_is"),
    ("The answer is $3 \\times 4$.", "12", "answer_is"),
    ("#### 2^{10}", "1024", "hash"),
    # prose: a hyphen between numbers is a range or a date, read as before (its first number)
    ("The answer is 10-12.", "10", "answer_is"),
    ("The answer is 18 (6 + 12).", "18", "answer_is"),  # a parenthetical, not 18 * 18
    ("#### 18 (6+12)", "18", "hash"),
    ("#### 2023-2024", "2023", "hash"),
    # not an expression: the existing number rules apply unchanged
    ("\\boxed{1\\frac{1}{2}}", "1.5", "boxed"),  # a mixed number, not 1 * 1/2
    ("\\boxed{12 \\text{ cm}^2}", "12", "boxed"),
    ("\\boxed{2\\pi}", "2", "boxed"),  # a symbol: not evaluated
    ("\\boxed{1,000 + 5}", "1000", "boxed"),  # a thousands comma is not in the grammar
    # bounded: a power tower or huge factorial is not computed, the first number is read as before
    ("\\boxed{10^{10^{10}}}", "10", "boxed"),
    ("\\boxed{2^{99999}}", "2", "boxed"),
    ("\\boxed{1000!}", "1000", "boxed"),
    ("\\boxed{" + "(" * 200 + "1" + ")" * 200 + "}", "1", "boxed"),
    ("\\boxed{\\sqrt{-4}}", "-4", "boxed"),  # not a real number: not evaluated
    ("\\boxed{\\frac{1}{0}}", None, None),
]


@pytest.mark.parametrize(("text", "value", "rule"), NUMERIC_EXPRESSIONS)
def test_numeric_expression_is_graded_by_value(text: str, value: str | None, rule: str | None) -> None:
    t0 = time.perf_counter()
    found = extract_answer(text, "numeric")
    assert time.perf_counter() - t0 < 1.0
    assert found == (Extraction(value, rule) if value is not None else None)


@pytest.mark.parametrize(
    ("text", "gold", "correct"),
    [
        ("\\boxed{2^{10}}", "1024", True),
        ("\\boxed{2^{10}}", "2", False),
        ("\\boxed{\\frac{\\sqrt{8}}{2}}", "1.41421356", True),
        ("\\boxed{\\frac{\\sqrt{8}}{2}}", "8", False),
        ("\\boxed{3\\cdot 4}", "12", True),
        ("\\boxed{3\\cdot 4}", "3", False),
        ("\\boxed{3\\sqrt{2}}", "4.242640687", True),
        ("The answer is $2^{-1} + 0.25$.", "0.75", True),
    ],
)
def test_numeric_expression_grade(text: str, gold: str, correct: bool) -> None:
    assert grade(text, gold, "numeric").correct is correct


NUMERIC_EQ = [
    ("18", "18", True),
    ("18.0", "18", True),
    ("1000", "1000", True),
    ("1,000", "1000", True),
    ("0.5", "0.5", True),
    ("1/2", "0.5", True),
    ("0.50000001", "0.5", True),  # within 1e-6 relative
    ("0.5001", "0.5", False),
    ("0.333333333333333", "0.3333333333", True),
    ("0.33", "0.333333", False),
    ("-3", "-3", True),
    ("3", "-3", False),
    ("1e3", "1000", True),
    ("0", "0", True),
    ("-0", "0", True),
    ("0.0000000001", "0", True),  # absolute tolerance 1e-9 near zero
    ("50", "0.5", False),  # documented: a percent is not rescaled
    ("50", "50", True),
    ("0,1", "1", False),  # a list never equals a single number
    ("0,1", "0.1", False),
    ("0,1", "0,1", True),
    ("01", "1", True),
    ("2", "18", False),
    (None, "18", False),
    ("", "18", False),
    ("abc", "18", False),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), NUMERIC_EQ)
def test_numeric_is_correct(pred: str | None, gold: str, expected: bool) -> None:
    assert is_correct(pred, gold, "numeric") is expected


# --------------------------------------------------------------------------------------------------------
# letters
# --------------------------------------------------------------------------------------------------------

CHOICES4 = ["London", "Paris", "Rome", "Berlin"]

LETTER = [
    ("The answer is (B).", None, "B", "answer_is"),
    ("The answer is B", None, "B", "answer_is"),
    ("The answer is (b).", None, "B", "answer_is"),
    ("The correct answer is C) Paris.", None, "C", "answer_is"),
    ("The correct answer is **B) Paris**.", None, "B", "answer_is"),
    ("Answer: C", None, "C", "answer_is"),
    ("**Answer:** C", None, "C", "answer_is"),
    ("**Answer: C**", None, "C", "answer_is"),
    ("Correct option: D", None, "D", "answer_is"),
    ("Final Answer: (E)", ["a", "b", "c", "d", "e"], "E", "answer_is"),
    ("The answer is: C. 42", None, "C", "answer_is"),
    ("The answer is A.", None, "A", "answer_is"),
    ("Answer: I", [str(i) for i in range(10)], "I", "answer_is"),
    ("Initially I thought (A), but the answer is (C).", None, "C", "answer_is"),
    ("The answer is option D.", None, "D", "answer_is"),
    ("So the answer is that the patient has hypokalemia (option C).", None, "C", "answer_is"),
    ("The answer is Paris.", CHOICES4, "B", "answer_is"),
    ("The answer is paris", CHOICES4, "B", "answer_is"),
    ("\\boxed{C}", None, "C", "boxed"),
    ("$\\boxed{\\text{C}}$", None, "C", "boxed"),
    ("\\boxed{(C)}", None, "C", "boxed"),
    ("\\boxed{\\textbf{D}}", None, "D", "boxed"),
    ("\\boxed{Rome}", CHOICES4, "C", "boxed"),
    ("**B**", None, "B", "letter_bold"),
    ("**(B)**", None, "B", "letter_bold"),
    ("**B) Paris**", None, "B", "letter_bold"),
    ("**C. Rome**\n\nThis option matches every finding.", None, "C", "letter_bold"),
    ("**Option D**", None, "D", "letter_bold"),
    ("**A** is wrong. **C** is right.", None, "C", "letter_bold"),
    ("Comparing both:\nB) Paris", None, "B", "letter_line"),
    ("(C) 42 apples", None, "C", "letter_line"),
    ("- D. Berlin", None, "D", "letter_line"),
    ("I think Option D is best.", None, "D", "letter_option"),
    ("Choice (A) fits.", None, "A", "letter_option"),
    ("It must be (B) given the data.", None, "B", "letter_option"),
    ("Hmm.\n\nD", None, "D", "letter_lone"),
    ("B", None, "B", "letter_lone"),
    ("**C**.", None, "C", "letter_bold"),
    ("The capital is Paris.", CHOICES4, "B", "choice_text"),
    ("It is clearly Berlin", CHOICES4, "D", "choice_text"),
    (THINK + "The answer is C.", None, "C", "answer_is"),
    # stray letters never win
    ("A farmer has 3 cows and 2 horses.", None, None, None),
    ("A farmer has 3 cows.", CHOICES4, None, None),
    ("I believe this is correct.", None, None, None),
    ("I think the correct choice is clear.", None, None, None),
    ("Answer: A farmer would know.", None, None, None),
    ("Both Paris and London are big.", CHOICES4, None, None),  # two options named: ambiguous
    ("A) 5\nB) 6\nC) 7\nD) 8", None, None, None),  # the options restated, no pick
    ("A) 5\nB) 6\nC) 7\nD) 8\n\n**C**", None, "C", "letter_bold"),
    ("The answer is E", CHOICES4, None, None),  # only A-D exist
    ("<think>The answer is B.</think>", None, None, None),  # reasoning only
    ("<think>The answer is B.", None, None, None),  # cut off in the think block
    ("Ans. unknown", None, None, None),
    ("Correct Option: B", None, "B", "answer_is"),
    ("Ans. is 'b' i.e., Hypokalemia", None, "B", "answer_is"),
    ("Ans: C", None, "C", "answer_is"),
    ("The best fit is option: C", None, "C", "letter_option"),
    ("B-cell lymphoma is the diagnosis.", None, None, None),
]


@pytest.mark.parametrize(("text", "choices", "value", "rule"), LETTER)
def test_letter_extraction(text: str, choices: list[str] | None, value: str | None, rule: str | None) -> None:
    found = extract_answer(text, "letter", choices)
    if value is None:
        assert found is None
    else:
        assert found == Extraction(value, rule)


def test_option_text_nested_in_a_longer_option() -> None:
    choices = ["Paris", "Paris, Texas", "Rome"]
    assert extract_answer("The answer is Paris, Texas.", "letter", choices) == Extraction("B", "answer_is")
    assert extract_answer("I would pick Paris, Texas here", "letter", choices) == Extraction(
        "B", "choice_text"
    )
    assert extract_answer("I would pick Paris here", "letter", choices) == Extraction("A", "choice_text")


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("B", "B", True),
        ("b", "B", True),
        ("(B)", "B", True),
        ("B", "(B)", True),
        ("C", "B", False),
        (None, "B", False),
        ("", "B", False),
        ("B.", "B", True),
        ("BC", "B", False),
    ],
)
def test_letter_is_correct(pred: str | None, gold: str, expected: bool) -> None:
    assert is_correct(pred, gold, "letter") is expected


# --------------------------------------------------------------------------------------------------------
# booleans
# --------------------------------------------------------------------------------------------------------

BOOLEAN = [
    ("Yes, the statement holds.", "yes", "boolean_lead"),
    ("No, it is not true.", "no", "boolean_lead"),  # the leading verdict, not the later "true"
    ("The answer is yes.", "yes", "answer_is"),
    ("Answer: False", "no", "answer_is"),
    ("The answer is **No**.", "no", "answer_is"),
    ("**No**", "no", "boolean_bold"),
    ("After weighing everything: **Yes**", "yes", "boolean_bold"),
    ("\\boxed{\\text{Yes}}", "yes", "boxed"),
    ("\\boxed{no}", "no", "boxed"),
    ("True", "yes", "boolean_lead"),
    ("It is false.", "no", "boolean_last"),
    ("Not sure, but I would say yes", "yes", "boolean_last"),
    ("Nothing else matters: no", "no", "boolean_last"),
    (THINK + "No.", "no", "boolean_lead"),
    ("I cannot tell.", None, None),
    ("<think>yes", None, None),
]


@pytest.mark.parametrize(("text", "value", "rule"), BOOLEAN)
def test_boolean_extraction(text: str, value: str | None, rule: str | None) -> None:
    found = extract_answer(text, "boolean")
    assert found == (Extraction(value, rule) if value else None)


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("yes", "yes", True),
        ("Yes", "yes", True),
        ("true", "yes", True),
        ("no", "yes", False),
        ("false", "no", True),
        (None, "no", False),
        ("maybe", "no", False),
        ("no", "False", True),
    ],
)
def test_boolean_is_correct(pred: str | None, gold: str, expected: bool) -> None:
    assert is_correct(pred, gold, "boolean") is expected


# --------------------------------------------------------------------------------------------------------
# LaTeX (math-verify behind a safety screen)
# --------------------------------------------------------------------------------------------------------

LATEX_EXTRACT = [
    ("The final answer is $\\dfrac{\\pi}{2}$.", "\\frac{\\pi}{2}", "answer_is"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", "boxed"),
    ("So \\boxed{\\left( 1, 2 \\right)}", "( 1, 2 )", "boxed"),
    ("The answer is the same as before.", None, None),
    ("so the sign is $-$", None, None),
    ("it equals $x + y$", "x + y", "latex_math"),
    ("The answer is pi/2.", "\\pi/2", "answer_is"),
    ("We get $$\\frac{1}{2}$$.", "\\frac{1}{2}", "latex_math"),
    ("Thus \\(x^2\\) and \\[ \\frac{\\pi}{3} \\]", "\\frac{\\pi}{3}", "latex_math"),
    ("so $x = 3$", "x = 3", "latex_math"),
    ("it is 7 in the end", "7", "last_number"),
    ("no math here", None, None),
]


@pytest.mark.parametrize(("text", "value", "rule"), LATEX_EXTRACT)
def test_latex_extraction(text: str, value: str | None, rule: str | None) -> None:
    found = extract_answer(text, "latex")
    assert found == (Extraction(value, rule) if value else None)


LATEX_EQ = [
    ("\\pi/2", "\\dfrac{\\pi}{2}", True),  # math-verify alone parses plain "pi/2" as p*i/2
    ("pi/2", "\\frac{\\pi}{2}", True),
    ("\\frac{\\pi}{2}", "\\frac{\\pi}{2}", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", True),
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "1/2", True),
    ("(1,2)", "\\left(1, 2\\right)", True),
    ("x = 3", "3", True),
    ("3", "\\frac{\\pi}{2}", False),
    ("\\frac{1}{23}", "\\frac{12}{3}", False),
    ("2^{100}", "2^{100}", True),
    ("10^{10^{10}}", "3", False),  # refused by the screen, not run: sympy would build a 10^10-digit integer
    (None, "3", False),
]


@pytest.mark.parametrize(("pred", "gold", "expected"), LATEX_EQ)
def test_latex_is_correct(pred: str | None, gold: str, expected: bool) -> None:
    assert is_correct(pred, gold, "latex") is expected


@pytest.mark.parametrize(
    ("expr", "safe"),
    [
        ("\\frac{1}{2}", True),
        ("e^{x^2}", True),
        ("2^{100}", True),
        ("5!", True),
        ("x^{2}+3x", True),
        ("10^{10^{10}}", False),
        ("10**10**10", False),
        ("{10}^{{10}^{10}}", False),
        ("9^{9^{9}}", False),
        ("2^{99999}", False),
        ("(10^3)!", False),
        ("100000!", False),
        ("\\prod_{k=1}^{10^9} k", False),
        ("\\binom{100000}{50000}", False),
        ("e^{e^{e^{10}}}", False),
        ("\\exp(\\exp(\\exp(10)))", False),
        ("\\Gamma(100000)", False),
        ("1" * 300, False),
    ],
)
def test_latex_safety_screen(expr: str, safe: bool) -> None:
    assert answers.latex_is_safe(expr) is safe


def test_latex_verification_works_off_the_main_thread() -> None:
    """math-verify's own timeouts use signal.alarm, which raises off the main thread; ours are off."""
    results: list[bool] = []
    thread = threading.Thread(
        target=lambda: results.append(is_correct("\\frac{2}{4}", "\\frac{1}{2}", "latex"))
    )
    thread.start()
    thread.join(30)
    assert results == [True]


# --------------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------------

TEXT = [
    ("The answer is Paris.", "Paris", "answer_is", "paris", True),
    ("Final answer: The Eiffel Tower", "The Eiffel Tower", "answer_is", "Eiffel Tower", True),
    ("Some reasoning here.\nParis", "Paris", "last_line", "Paris", True),
    ("\\boxed{\\text{Paris}}", "Paris", "boxed", "paris", True),
    ("The answer is **Rome**!", "Rome", "answer_is", "Paris", False),
]


@pytest.mark.parametrize(("text", "value", "rule", "gold", "correct"), TEXT)
def test_text(text: str, value: str, rule: str, gold: str, correct: bool) -> None:
    assert extract_answer(text, "text") == Extraction(value, rule)
    assert grade(text, gold, "text") == Grade(value, rule, correct)


# --------------------------------------------------------------------------------------------------------
# grade(), reasoning split, contract
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gold", "answer_type", "expected"),
    [
        ("<think>It is 12.</think>So she has 20 apples.", "20", "numeric", Grade("20", "last_number", True)),
        ("<think>It is 20.</think>So she has 12 apples.", "20", "numeric", Grade("12", "last_number", False)),
        ("<think>So the answer is 20", "20", "numeric", Grade(None, "none", False)),  # cut off: never correct
        (
            "reasoning 20</think>\n\nThe answer is 7.",
            "7",
            "numeric",
            Grade("7", "answer_is", True),
        ),  # prefilled
        (
            "<|channel|>analysis<|message|>maybe 3<|end|><|start|>assistant<|channel|>final<|message|>**5**<|return|>",
            "5",
            "numeric",
            Grade("5", "last_number", True),
        ),  # gpt-oss harmony channels
        ("The answer is (C)", "C", "letter", Grade("C", "answer_is", True)),
        ("Nothing here", "yes", "boolean", Grade(None, "none", False)),
    ],
)
def test_grade(text: str, gold: str, answer_type: str, expected: Grade) -> None:
    assert grade(text, gold, answer_type) == expected


def test_grade_maps_option_text_with_choices() -> None:
    assert grade("The answer is Rome.", "C", "letter", CHOICES4) == Grade("C", "answer_is", True)


def test_unknown_answer_type_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="numeric, letter, boolean, latex, text"):
        extract_answer("42", "number")
    with pytest.raises(ValueError, match="valid"):
        is_correct("42", "42", "float")


@pytest.mark.parametrize(
    ("gold", "answer_type"), [("eighteen", "numeric"), ("K", "letter"), ("maybe", "boolean"), ("", "text")]
)
def test_malformed_gold_is_a_clear_error(gold: str, answer_type: str) -> None:
    with pytest.raises(ValueError, match="gold answer"):
        grade("The answer is 5", gold, answer_type)


def test_answer_types_are_the_one_enumeration() -> None:
    from compress_distill.names import ANSWER_TYPES

    assert answers.ANSWER_TYPES is ANSWER_TYPES


def test_non_string_text_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="str"):
        extract_answer(42, "numeric")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# bad input: no exception, no extraction, < 1 s each
# --------------------------------------------------------------------------------------------------------

_rng = random.Random(0)
_GARBAGE = bytes(_rng.randrange(128, 256) for _ in range(4096))

BAD_INPUTS = {
    "empty": "",
    "whitespace": " \n\t " * 1000,
    "none": None,
    "invalid_utf8_bytes": b"\xff\xfe The answer is 42 \xc3\x28",
    "surrogates": _GARBAGE.decode("utf-8", "surrogateescape"),
    "surrogates_around_answer": "\udcff\udcfe The answer is 42 \udc80",
    "unclosed_think_1mb": "<think>" + "The answer is 42. " * 60_000,
    "prose_1mb": "lorem ipsum dolor sit amet " * 40_000,
    "open_braces": "\\boxed{" + "{" * 5_000,
    "many_boxed": "\\boxed{" * 5_000,
    "close_braces": "}" * 5_000 + "\\boxed",
    "deep_unbalanced_1mb": "\\boxed{" + "{\\frac{" * 150_000,
    "dollars": "$" * 200_000,
    "math_delims": "\\(" * 100_000,
    "bold_marks": "**" * 200_000,
    "answer_is_1mb": "the answer is " * 75_000,
    "hashes": "#### " * 100_000,
    "signs": "-$-$." * 100_000,
    "ans_words": "ans means plans " * 60_000,
    "ans_statements": "Ans. is Ans: the correct option is: " * 30_000,
    "digit_run": "9" * 1_000_000,
}


@pytest.mark.parametrize("answer_type", ["numeric", "letter", "boolean", "latex"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_extracts_nothing_quickly(name: str, answer_type: str) -> None:
    text = BAD_INPUTS[name]
    t0 = time.perf_counter()
    found = extract_answer(text, answer_type, CHOICES4 if answer_type == "letter" else None)
    result = grade(
        text,
        {"numeric": "42", "letter": "B", "boolean": "yes", "latex": "42"}[answer_type],
        answer_type,
        CHOICES4 if answer_type == "letter" else None,
    )
    elapsed = time.perf_counter() - t0
    assert found is None
    assert result == Grade(None, "none", False)
    assert elapsed < 1.0, f"{name}/{answer_type} took {elapsed:.2f} s"


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_text_type_is_bounded(name: str) -> None:
    """Text answers accept any words, so prose yields a (capped) value; still no exception, < 1 s."""
    t0 = time.perf_counter()
    found = extract_answer(BAD_INPUTS[name], "text")
    assert time.perf_counter() - t0 < 1.0
    assert found is None or len(found.value) <= answers.MAX_CANDIDATE_CHARS


@pytest.mark.parametrize(
    "expr",
    [
        "10^{10^{10}}",
        "10**10**10",
        "9^{9^{9}}",
        "\\prod_{k=1}^{10^9} k",
        "(10^3)!",
        "e^{e^{e^{10}}}",
        "\\exp(\\exp(\\exp(10)))",
        "2^{2^{2^{2^{2^{2}}}}}",
        "\\frac{" * 60 + "1" + "}{2}" * 60,
        "x" * 10_000,
    ],
)
def test_adversarial_latex_is_bounded(expr: str) -> None:
    t0 = time.perf_counter()
    assert grade(f"The answer is $\\boxed{{{expr}}}$", "3", "latex").correct is False
    assert time.perf_counter() - t0 < 1.0


def test_long_numbers_are_not_answers() -> None:
    assert extract_answer("The answer is " + "9" * 5000, "numeric") is None
    assert extract_answer("It is 1e999999", "numeric") is None
    assert is_correct("9" * 5000, "9", "numeric") is False


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ((1, 3), "0.333333333333333"),
        ((10**30, 3), "333333333333333000000000000000"),
        ((-7, 8), "-0.875"),
        ((36, 2), "18"),
        ((1, 2**20), "0.00000095367431640625"),
    ],
)
def test_canonical_decimal(value: tuple[int, int], text: str) -> None:
    from fractions import Fraction

    assert answers.canonical(Fraction(*value)) == text


def test_choices_with_missing_entries_do_not_crash() -> None:
    assert extract_answer("It is clearly Rome", "letter", ["Paris", None, "Rome"]) == Extraction(
        "C", "choice_text"
    )  # type: ignore[list-item]


def test_math_verify_stays_off_the_hot_path() -> None:
    """Numeric, letter and boolean grading never import math-verify (sympy import alone costs ~1 s)."""
    import subprocess
    import sys

    code = (
        "import sys; from compress_distill.answers import grade;"
        "grade('The answer is 18', '18', 'numeric'); grade('**B**', 'B', 'letter'); grade('Yes', 'yes', 'boolean');"
        "grade('The answer is Paris', 'paris', 'text');"
        "assert 'math_verify' not in sys.modules and 'sympy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
