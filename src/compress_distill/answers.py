"""Answer extraction cascade and verification (docs/architecture.md §6).

``extract_answer(text, answer_type, choices)`` reads the **final response only**
(``reasoning.split_reasoning(text)[1]``): a number restated inside the reasoning never wins, and a trace cut
off inside an unclosed think block has an empty final response, so nothing is extracted and it is never
counted correct.  The cascade, in priority order, and the ``Extraction.rule`` each step records:

1. ``boxed``      the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces matched), then earlier ones;
2. ``hash``       the last ``#### X`` (GSM8K style; "#### Step 2" is a markdown heading and skipped);
3. ``answer_is``  the last "the answer is X" / "final answer: X" / "**Answer:** X" / "correct option: X" /
                  "Ans. is X" statement, then earlier ones; "## Final Answer" reads the next line;
4. fallbacks by type, each taking the LAST occurrence in the final response:
   - numeric: ``last_number``;
   - letter:  ``letter_bold`` ("**B**"), ``letter_line`` ("B)" / "(B)" / "B." at a line start),
     ``letter_option`` ("Option B", "choice (B)", "(B)" in prose), ``letter_lone`` (a line holding only the
     letter), ``choice_text`` (exactly one option's text appears; needs ``choices``).  A bare capital in prose
     ("A farmer has...") matches none of these, so a stray letter never wins;
   - boolean: ``boolean_bold``, ``boolean_lead`` (a line starting with yes/no/true/false), ``boolean_last``;
   - latex:   ``latex_math`` (the last ``$...$`` / ``\\(...\\)`` / ``\\[...\\]``), then ``last_number``;
   - text:    ``last_line``.
   A marked candidate (steps 1-3) that does not parse as the answer type falls through to the next step.

Number rules (documented decisions; tests pin each one):
- A comma is a thousands separator only in groups of exactly three digits ("1,000", "12,345,678").  Any other
  comma between numbers separates list items: "0,1" is the list ``"0,1"``, never 1, 0.1 or 01, and a list
  never equals a single-number gold.
- Currency symbols, units and a trailing percent sign are dropped: "$1,000.50" -> "1000.5", "50%" -> "50".
  A percent is NOT rescaled, so "50%" does not match a gold "0.5": the numeric benchmarks here state percent
  answers as the percent number (GSM8K "what percent..." golds are "50"), and guessing the scale would make
  "0.5" and "50" interchangeable for every question.
- Fractions ("3/4", "\\frac{3}{4}"), mixed numbers ("1 1/2"), scientific notation ("1e3", "1.5 \\times 10^{3}")
  and negatives ("-3", "−3") are parsed exactly (``fractions.Fraction``); ``is_correct`` accepts a relative
  difference of 1e-6 (absolute 1e-9 near zero), so 1/3 matches "0.333333333".
- After "the answer is ...", an equation keeps its right-hand side ("x = 5" -> 5, "2 + 3 = 5" -> 5).
- A response that runs on into a new "\nQuestion:" (few-shot imitation) is cut there when an answer marker
  precedes it, so "#### 18 ... Question: ... #### 10" gives 18.
- Number words ("eighteen") are not read.
- Expressions: a marked candidate (steps 1-3) that is, as a whole, an arithmetic expression is graded by
  its value, not by its first number: "\\boxed{2^{10}}" -> 1024, "\\boxed{\\frac{\\sqrt{8}}{2}}" ->
  1.4142135623731, "\\boxed{3\\cdot 4}" -> 12, "the answer is 2^5" -> 32 (grammar in ``_Expression``:
  + - * / ^ ** \\cdot \\times \\div, \\frac, \\sqrt / \\sqrt[n], n!, brackets, and a product written by
  juxtaposition only before \\sqrt or \\frac, after "!" or ")", and before "(" in math mode).  Exact values
  stay exact; an irrational root is a float printed to 15 significant digits, as a repeating decimal is.
  In ``####`` and answer statements (prose) a hyphen between numbers is a range or a date ("10-12",
  "2023-2024"), never a minus, and "18 (6 + 12)" is 18 with a remark, so those are read as before; inside
  ``\\boxed{}`` (math mode) a hyphen is a minus and "2(3+4)" is 14.  "1 1/2" and
  "1\\frac{1}{2}" stay mixed numbers.  Anything outside the grammar (a symbol such as \\pi, units, a
  thousands comma) or past its bounds (nesting over ``MAX_EXPR_DEPTH``, an exact value over
  ``MAX_VALUE_BITS`` bits, ``n!`` over ``MAX_FACTORIAL``, a root index over ``MAX_ROOT``, a non-real root,
  division by zero) is read by the rules above: "\\boxed{2\\pi}" is 2, "\\boxed{10^{10^{10}}}" is 10.  The
  fallbacks (``last_number``) never evaluate: prose is full of sums.  ``is_correct`` compares canonical
  numbers; it does not evaluate an expression handed to it as a prediction.

Strings that are not valid text: a final response containing lone surrogates is treated as having no answer
(it came from bytes that were not UTF-8 and cannot be stored in the Parquet tables anyway).

Bad input never raises and never takes long: bytes that are not UTF-8 and strings with lone surrogates
extract nothing; only the last ``MAX_SCAN_CHARS`` of a long final response are
scanned (a final answer comes last); brace matching and candidate lengths are capped; every regex is free of
nested quantifiers, so scanning is linear.  LaTeX is compared through math-verify with its signal-based
timeouts off (they fail off the main thread): inputs are capped at ``LATEX_MAX_CHARS`` and expressions sympy
could blow up on (power towers like ``10^{10^{10}}``, big exponents, factorials, big-operator bounds) are
compared as normalised strings instead, so nothing unbounded ever runs.  math-verify is imported lazily and only
reached for ``latex`` answers, never on the numeric/letter/boolean hot path.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction
from functools import lru_cache
from typing import Any

from compress_distill.names import ANSWER_TYPES
from compress_distill.reasoning import split_reasoning

LETTERS = "ABCDEFGHIJ"

# Only the tail of a longer final response is scanned: answers come last, and a 1 MB response must stay fast.
MAX_SCAN_CHARS = 16_384
MAX_BOXED_CHARS = 1_024  # a \boxed{} body longer than this is not an answer; bounds brace matching
MAX_TRIES = 16  # earlier \boxed / answer statements tried when the last one does not parse
MAX_CANDIDATE_CHARS = 300  # chars after "the answer is" read as the answer
MAX_DIGITS = 60  # longer digit runs are not answers (and int() refuses > 4300 digits anyway)
MAX_EXPONENT = 60  # |e| in 1eN: 10**N for huge N would be an unbounded computation
LATEX_MAX_CHARS = 200  # longer LaTeX is compared as a string, never handed to sympy
REL_TOL = Fraction(1, 10**6)
ABS_TOL = Fraction(1, 10**9)


@dataclass(frozen=True, slots=True)
class Extraction:
    value: str  # normalised: canonical decimal / "A".."J" / "yes"|"no" / cleaned LaTeX / cleaned text
    rule: str  # the cascade rule that matched (module docstring)


@dataclass(frozen=True, slots=True)
class Grade:
    extracted: str | None
    rule: str  # "none" when nothing was extracted
    correct: bool


# ---------------------------------------------------------------------------------------------------------
# final response
# ---------------------------------------------------------------------------------------------------------

# Unicode look-alikes models emit, mapped to ASCII once per (short) response.
# Not NFKC: it would turn "m²" into "m2" and "10³" into "103".
_UNICODE_FIX = str.maketrans(
    {
        "\u2212": "-",
        "\u00a0": " ",
        "\u202f": "",
        "\u2009": "",
        "\uff1a": ":",
        "\uff08": "(",
        "\uff09": ")",
        "\uff0c": ",",
        "\uff0e": ".",
        "\uff04": "$",
        "\uff05": "%",
    }
    | {chr(0xFF10 + i): str(i) for i in range(10)}  # full-width digits
)
_RUN_ON = "\nQuestion:"  # few-shot run-on: the model starts answering a new question it invented
_HAS_MARKER = re.compile(r"####|\\boxed|answer", re.IGNORECASE)


def _final_response(text: str | bytes | None) -> str:
    """The part of ``text`` answers are read from; "" when there is none or it is not valid text."""
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            return ""
    if not isinstance(text, str):
        raise TypeError(f"extract_answer needs the completion text as str, got {type(text).__name__}")
    response = split_reasoning(text)[1]
    if not response:
        return ""
    if len(response) > MAX_SCAN_CHARS:
        response = response[-MAX_SCAN_CHARS:]
    if not response.isascii():
        try:
            response.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: text decoded with surrogateescape from bad bytes
            return ""
        response = response.translate(_UNICODE_FIX)
    cut = response.find(_RUN_ON)
    if cut > 0 and _HAS_MARKER.search(response, 0, cut):
        response = response[:cut]
    return response


# ---------------------------------------------------------------------------------------------------------
# marked candidates: \boxed{}, ####, "the answer is"
# ---------------------------------------------------------------------------------------------------------

_BRACE = re.compile(r"[{}]")
_TOKEN = re.compile(r"[^\s$]{1,64}")


def _braced(s: str, j: int) -> str | None:
    """Body of the brace group opening at or after ``j`` (spaces skipped); None if unbalanced or too long."""
    n = len(s)
    while j < n and s[j] == " ":
        j += 1
    if j >= n:
        return None
    if s[j] != "{":  # "\boxed 5": one token
        m = _TOKEN.match(s, j)
        return m.group(0) if m else None
    depth = 0
    for m in _BRACE.finditer(s, j, min(n, j + MAX_BOXED_CHARS + 2)):
        if m.group(0) == "{":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return s[j + 1 : m.start()]
    return None


def _boxed(s: str) -> Iterator[str]:
    end = len(s)
    for _ in range(MAX_TRIES):
        i = max(s.rfind("\\boxed", 0, end), s.rfind("\\fbox", 0, end))
        if i < 0:
            return
        body = _braced(s, i + (6 if s.startswith("\\boxed", i) else 5))
        if body is not None and body.strip():
            yield body
        end = i


_HEADER_WORD = re.compile(r"[A-Za-z]{2,}")


def _hashes(s: str) -> Iterator[str]:
    end = len(s)
    for _ in range(4):
        i = s.rfind("####", 0, end)
        if i < 0:
            return
        stop = s.find("\n", i)
        body = s[i + 4 : stop if stop >= 0 else len(s)].strip(" #*\t")
        if body and not _HEADER_WORD.match(body):  # "#### Step 2": a markdown heading, not GSM8K's marker
            yield body[:MAX_CANDIDATE_CHARS]
        end = i


# "the answer is X" / "final answer: X" / "correct option: X" / "Ans. is X".  Found by str.rfind on the anchor
# words "ans" (which also finds "answer") and "correct", walking back from the end of the response, then a
# regex anchored right after the word: the last statement usually sits in the last lines, so this touches only
# the tail.  (One case-insensitive finditer over the whole response cost ~60 us, most of the hot path.)
_AFTER_ANSWER = re.compile(r"(?:[*_]*\s+(?:is|would\s+be|should\s+be|will\s+be)\b|[*_ \t]*[:=])")
_AFTER_FINAL_ANSWER = re.compile(r"[*_ \t]*(?=\n)")  # "## Final Answer" heading, answer on the next line
_AFTER_ANS = re.compile(r"\.?\s+is\b|\.?[ \t]*:|\.")  # MedMCQA explanations: "Ans. is 'b' i.e. ...", "Ans: B"
_CORRECT_CHOICE = re.compile(r"correct\s+(?:option|choice)")
_BEFORE_FINAL = re.compile(r"final\s+$")
_ANSWER_LEAD = re.compile(r"[\s*_:#>]*")


def _ans_end(low: str, i: int) -> int | None:
    """End of the statement marker at the "ans" found at ``i`` in the lower-cased text, or None."""
    if i > 0 and low[i - 1].isalnum():  # "means", "plans"
        return None
    if low.startswith("answer", i):
        m = _AFTER_ANSWER.match(low, i + 6)
        if m:
            return m.end()
        if _BEFORE_FINAL.search(low, max(0, i - 10), i):
            m = _AFTER_FINAL_ANSWER.match(low, i + 6)
            return m.end() if m else None
        return None
    if i + 3 < len(low) and low[i + 3].isalnum():  # "ansatz"
        return None
    m = _AFTER_ANS.match(low, i + 3)
    return m.end() if m else None


def _correct_end(low: str, i: int) -> int | None:
    """End of a "correct option:" / "correct choice is" marker at ``i`` ("correct answer" is an "ans" hit)."""
    if i > 0 and low[i - 1].isalnum():  # "incorrect"
        return None
    m = _CORRECT_CHOICE.match(low, i)
    if not m:
        return None
    m = _AFTER_ANSWER.match(low, m.end())
    return m.end() if m else None


def _lowered(s: str) -> str:
    low = s.lower()
    if len(low) == len(s):
        return low
    # a few characters change length when lower-cased ("İ" -> "i̇"): keep offsets aligned
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in s)


def _answer_statements(s: str) -> Iterator[str]:
    """Text after each "the answer is" / "final answer:" statement, last statement first."""
    low = _lowered(s)
    a, c = low.rfind("ans"), low.rfind("correct")
    found = 0
    while found < MAX_TRIES and (a >= 0 or c >= 0):
        if a > c:
            end, a = _ans_end(low, a), low.rfind("ans", 0, a)
        else:
            end, c = _correct_end(low, c), low.rfind("correct", 0, c)
        if end is None:
            continue
        found += 1
        lead = _ANSWER_LEAD.match(s, end)  # skip "**", ":", blank lines before the answer itself
        start = lead.end() if lead else end
        stop = s.find("\n", start)
        body = s[start : stop if stop >= 0 else len(s)][:MAX_CANDIDATE_CHARS].strip()
        if body:
            yield body


def _marked(s: str) -> Iterator[tuple[str, str]]:
    for body in _boxed(s):
        yield "boxed", body
    if "####" in s:
        for body in _hashes(s):
            yield "hash", body
    for body in _answer_statements(s):
        yield "answer_is", body


# ---------------------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------------------

_NUM = re.compile(
    r"(?<![\w.])"
    r"(?P<neg>-)?(?:\\?\$|[€£¥₹])?(?P<neg2>-)?(?=\.?\d)"
    r"(?:(?P<whole>\d{1,9})[ ]+(?P<mnum>\d{1,9})/(?P<mden>\d{1,9})(?!\.?\d)"  # mixed number "1 1/2"
    r"|(?P<int>[1-9]\d{0,2}(?:,\d{3})+(?!\d)|\d+)?(?P<dec>\.\d+)?"  # 1,000 | 12 | 12.5 | .5
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?)(?!\.?\d))?"  # 3/4
    r"(?:[eE](?P<exp>[-+]?\d{1,6})(?![\w])"  # 1e3
    r"|\s?(?:[x×*·]|\\times|\\cdot)\s?10\s?(?:\^|\*\*)\s?\{?(?P<exp2>[-+]?\d{1,6})\}?)?"  # 1.5 × 10^3
    r")"
)
_LATEX_NUM_FIX = [
    (re.compile(r"\\[dt]?frac\s*\{\s*([-\d.,]{1,30})\s*\}\s*\{\s*([\d.,]{1,30})\s*\}"), r" \1/\2 "),
    (re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)"), r" \1/\2 "),
    (re.compile(r"\\(?:text|textbf|mathrm|mathbf|operatorname|mbox)\s*\{([^{}]{0,200})\}"), r" \1 "),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[,!;: ]|\\q?quad"), ""),
    (re.compile(r"\^\s*\{?\\circ\}?|\\left|\\right|\\%"), " "),
]
_UNIT_POWER = re.compile(r"(?<=[a-zA-Z])\^\{?[23]\}?")  # "25 cm^2" is 25, not 2


def _clean_numeric(s: str) -> str:
    if "\\" in s or "{" in s:
        for pattern, repl in _LATEX_NUM_FIX:
            s = pattern.sub(repl, s)
    if "^" in s:
        s = _UNIT_POWER.sub("", s)
    return s


def _fraction(m: re.Match[str]) -> Fraction | None:
    """Exact value of one ``_NUM`` match; None when it has no digits or is out of bounds."""
    g = m.groupdict()
    neg = bool(g["neg"]) != bool(g["neg2"])
    if g["whole"] is not None:
        mden = int(g["mden"])
        if mden == 0:
            return None
        value = int(g["whole"]) + Fraction(int(g["mnum"]), mden)
    else:
        int_part, dec = g["int"], g["dec"]
        if int_part is None and dec is None:
            return None
        digits = (int_part or "0").replace(",", "")
        if len(digits) + len(dec or "") > MAX_DIGITS:
            return None
        value = Fraction(digits + (dec or ""))
        if g["den"] is not None:
            if len(g["den"]) > MAX_DIGITS:
                return None
            den = Fraction(g["den"])
            if den == 0:
                return None
            value /= den
        exp = g["exp"] or g["exp2"]
        if exp is not None:
            e = int(exp)
            if abs(e) > MAX_EXPONENT:
                return None
            value *= Fraction(10) ** e
    return -value if neg else value


def canonical(value: Fraction) -> str:
    """Canonical decimal string: '18', '0.5', '-3'; non-terminating fractions to 15 significant digits."""
    if value.denominator == 1:
        return str(value.numerator)
    with localcontext() as ctx:
        # exact when the decimal terminates (inputs have <= MAX_DIGITS digits and |exponent| <= MAX_EXPONENT)
        ctx.prec = 2 * (MAX_DIGITS + MAX_EXPONENT) if _terminates(value.denominator) else 15
        text = format((Decimal(value.numerator) / Decimal(value.denominator)).normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _terminates(den: int) -> bool:
    for p in (2, 5):
        while den % p == 0:
            den //= p
    return den == 1


def _numbers(s: str, first: bool) -> str | None:
    """The first (``first``) or last number of ``s`` as a canonical string; a comma list as "a,b".

    Tokens are grouped into comma-linked runs ("0,1" / "0, 1": a list; thousands groups are one token) and
    only the chosen run is converted, so a response full of numbers costs one regex scan.
    """
    runs: list[list[re.Match[str]]] = []
    prev_end = -1
    for m in _NUM.finditer(s):
        if runs and len(runs[-1]) < 32 and s[prev_end : m.start()].strip() == ",":
            runs[-1].append(m)
        elif first and runs:
            break
        else:
            runs.append([m])
        prev_end = m.end()
    for run in runs if first else reversed(runs):
        values = [v for v in map(_fraction, run) if v is not None]  # out-of-bounds tokens are not answers
        if values:
            return ",".join(canonical(v) for v in values)
    return None


# ---------------------------------------------------------------------------------------------------------
# arithmetic expressions in a marked answer: "\boxed{2^{10}}", "\frac{\sqrt{8}}{2}", "3 \cdot 4"
# ---------------------------------------------------------------------------------------------------------

_EXPR_HINT = re.compile(r"[\^*+×·÷!(]|\\(?:cdot|times|div|sqrt|[dt]?frac)|\d\s*-\s*[\d(\\]")
_EXPR_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?|\.\d+)"
    r"|\\(?P<cmd>cdot|times|div|sqrt|[dt]?frac)(?![a-zA-Z])"
    r"|(?P<op>\*\*|[-+*/^(){}\[\]!×·÷]))"
)
_EXPR_MUL = {"*", "\\cdot", "\\times", "×", "·"}
_EXPR_DIV = {"/", "\\div", "÷"}
_EXPR_IMPLICIT = {"\\sqrt", "\\frac", "\\dfrac", "\\tfrac"}  # "3\sqrt{2}" = 3*sqrt(2); "(": _implicit_product
_EXPR_MARKUP = " \t$*_"  # markup around "the answer is **2^5**."
MAX_EXPR_DEPTH = 32  # nested groups; deeper is not an answer (and would exhaust the recursion limit)
MAX_VALUE_BITS = 256  # |numerator| and denominator of every exact intermediate value (~77 digits)
MAX_FACTORIAL = 60  # n! for n <= 60 only (60! has 82 digits; the value bound then applies)
MAX_ROOT = 12  # \sqrt[n]{x} and x^{p/q} for n, q <= 12
MAX_LOG2 = 1_000  # |log2| of an inexact (float) value: far inside float range, so nothing overflows

Number = Fraction | float  # exact while every step is exact; a float once a root is irrational


class _NotAnExpression(Exception):
    """The candidate is outside the grammar or its bounds: it is read by the number rules instead."""


class _Expression:
    """Recursive-descent evaluator of one arithmetic expression (module docstring, "Expressions").

    Grammar (``^``/``**`` right-associative and binding tighter than a sign)::

        expr    := term (("+" | "-") term)*
        term    := signed (("*" | "\\cdot" | "\\times" | "/" | "\\div" | implicit) signed)*
        signed  := ("-" | "+") signed | power
        power   := postfix (("^" | "**") signed)?
        postfix := atom "!"*
        atom    := number | "(" expr ")" | "{" expr "}" | "[" expr "]"
                 | "\\sqrt" ("[" expr "]")? arg | "\\frac" arg arg
        arg     := "{" expr "}" | number
    """

    def __init__(self, s: str, prose: bool) -> None:
        self.tokens = self._tokenize(s)
        self.i = 0
        self.depth = 0
        self.prose = prose

    @staticmethod
    def _tokenize(s: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(s):
            m = _EXPR_TOKEN.match(s, pos)
            if m is None:
                if s[pos:].isspace():
                    break
                raise _NotAnExpression
            kind = m.lastgroup or "op"
            tokens.append((kind, m.group(kind) if kind != "cmd" else "\\" + m.group(kind)))
            pos = m.end()
        return tokens

    def value(self) -> Number:
        v = self._expr()
        if self.i != len(self.tokens):
            raise _NotAnExpression
        return v

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise _NotAnExpression
        self.i += 1
        return self.tokens[self.i - 1]

    def _expect(self, op: str) -> None:
        if self._take()[1] != op:
            raise _NotAnExpression

    def _expr(self) -> Number:
        v = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()[1]
            if op == "-" and self.prose:  # "10-12", "2023-2024": a range or a date in prose
                raise _NotAnExpression
            w = self._term()
            v = _bounded(v + w if op == "+" else v - w)
        return v

    def _term(self) -> Number:
        v = self._signed()
        while True:
            op = self._peek()
            prev = self.tokens[self.i - 1][1]
            if op in _EXPR_MUL or op in _EXPR_DIV:
                self.i += 1
            elif not self._implicit_product(prev, op):
                return v
            w = self._signed()
            if op in _EXPR_DIV:
                if w == 0:
                    raise _NotAnExpression
                v = _bounded(v / w)
            else:
                v = _bounded(v * w)

    def _implicit_product(self, prev: str, op: str | None) -> bool:
        """Whether ``prev op`` is a product written without a sign ("3\\sqrt{2}", "2(3+4)", "3!\\,7!").

        Never between two numbers ("1 1/2" is a mixed number), and in prose never before "(": "the answer
        is 18 (6 + 12)" gives 18, not 324.
        """
        if op is None:
            return False
        if op == "(":
            return not self.prose
        return op in _EXPR_IMPLICIT or (prev in ("!", ")") and op[0].isdigit())

    def _signed(self) -> Number:
        if self._peek() in ("-", "+"):
            sign = self._take()[1]
            v = self._nested(self._signed)
            return -v if sign == "-" else v
        return self._power()

    def _power(self) -> Number:
        base = self._postfix()
        if self._peek() in ("^", "**"):
            self.i += 1
            return _power(base, self._nested(self._signed))
        return base

    def _postfix(self) -> Number:
        v = self._atom()
        while self._peek() == "!":
            self.i += 1
            if not (isinstance(v, Fraction) and v.denominator == 1 and 0 <= v <= MAX_FACTORIAL):
                raise _NotAnExpression
            v = _bounded(Fraction(math.factorial(int(v))))
        return v

    def _nested(self, parse: Callable[[], Number]) -> Number:
        """``parse()`` one level deeper: groups, signs and exponents nest, and nesting is bounded."""
        self.depth += 1
        if self.depth > MAX_EXPR_DEPTH:
            raise _NotAnExpression
        v = parse()
        self.depth -= 1
        return v

    def _group(self, close: str) -> Number:
        v = self._nested(self._expr)
        self._expect(close)
        return v

    def _atom(self) -> Number:
        kind, tok = self._take()
        if kind == "num":
            return Fraction(tok)
        if tok in ("(", "{", "["):
            return self._group({"(": ")", "{": "}", "[": "]"}[tok])
        if tok == "\\sqrt":
            n: Fraction | float = Fraction(2)
            if self._peek() == "[":
                self.i += 1
                n = self._group("]")
            return _root(self._arg(), n)
        if tok in ("\\frac", "\\dfrac", "\\tfrac"):
            num, den = self._arg(), self._arg()
            if den == 0:
                raise _NotAnExpression
            return _bounded(num / den)
        raise _NotAnExpression

    def _arg(self) -> Number:
        kind, tok = self._take()
        if kind == "num":
            return Fraction(tok)
        if tok == "{":
            return self._group("}")
        raise _NotAnExpression


def _bounded(v: Number) -> Number:
    if isinstance(v, Fraction):
        if v.numerator.bit_length() > MAX_VALUE_BITS or v.denominator.bit_length() > MAX_VALUE_BITS:
            raise _NotAnExpression
    elif v != 0 and (not math.isfinite(v) or abs(math.log2(abs(v))) > MAX_LOG2):
        raise _NotAnExpression
    return v


def _int_root(n: int, k: int) -> int | None:
    """The exact integer k-th root of ``n`` >= 0, or None."""
    r = round(n ** (1.0 / k)) if n.bit_length() < 1000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**k == n:
            return c
    return None


def _root(x: Number, n: Number) -> Number:
    """The real ``n``-th root of ``x``: exact when both parts are perfect powers, else a float."""
    if not (isinstance(n, Fraction) and n.denominator == 1 and 2 <= n <= MAX_ROOT):
        raise _NotAnExpression
    k = int(n)
    if x < 0:
        if k % 2 == 0:  # not a real number
            raise _NotAnExpression
        return -_root(-x, n)
    if isinstance(x, Fraction):
        num, den = _int_root(x.numerator, k), _int_root(x.denominator, k)
        if num is not None and den is not None:
            return Fraction(num, den)
    return _bounded(float(x) ** (1.0 / k))


def _power(base: Number, exp: Number) -> Number:
    if isinstance(exp, Fraction) and exp.denominator == 1:
        e = int(exp)
        if base == 0:
            if e < 0:
                raise _NotAnExpression
            return Fraction(0) if e else Fraction(1)
        if isinstance(base, Fraction):
            size = max(base.numerator.bit_length(), base.denominator.bit_length())
            if abs(e) * size > MAX_VALUE_BITS:
                raise _NotAnExpression
            return _bounded(base**e)
        if abs(e * math.log2(abs(base))) > MAX_LOG2:
            raise _NotAnExpression
        return _bounded(base**e)
    if isinstance(exp, Fraction) and exp.denominator <= MAX_ROOT and abs(exp.numerator) <= MAX_ROOT:
        root = _root(base, Fraction(exp.denominator))  # 8^{2/3} = (8^{1/3})^2
        return _power(root, Fraction(exp.numerator))
    if base <= 0 or abs(float(exp) * math.log2(base)) > MAX_LOG2:
        raise _NotAnExpression
    return _bounded(float(base) ** float(exp))


def _expression_value(c: str, prose: bool) -> str | None:
    """Canonical value of ``c`` when all of it is an arithmetic expression with an operator, else None."""
    if not _EXPR_HINT.search(c):
        return None
    c = c.strip(_EXPR_MARKUP).rstrip(".;").rstrip(_EXPR_MARKUP)  # "**2^5**." -> "2^5"; ".5" keeps its point
    try:
        v = _Expression(c, prose).value()
    except _NotAnExpression:
        return None
    if isinstance(v, float):  # irrational: 15 significant digits, as canonical() prints a repeating decimal
        v = Fraction(Decimal(f"{v:.15g}"))
    return canonical(v)


def _numeric_candidate(c: str, prose: bool) -> str | None:
    c = _clean_numeric(c)
    eq = c.rfind("=")
    if eq >= 0 and _NUM.search(c, eq + 1):  # "x = 5", "2 + 3 = 5": the right-hand side is the answer
        c = c[eq + 1 :]
    value = _expression_value(c, prose)
    return value if value is not None else _numbers(c, first=True)


def _extract_numeric(s: str, choices: Sequence[str] | None) -> Extraction | None:
    for rule, body in _marked(s):
        value = _numeric_candidate(body, prose=rule != "boxed")
        if value is not None:
            return Extraction(value, rule)
    value = _numbers(_clean_numeric(s), first=False)
    return Extraction(value, "last_number") if value is not None else None


@lru_cache(maxsize=65_536)
def _number_list(s: str) -> tuple[Fraction, ...] | None:
    """A prediction or gold as numbers: one value, or a comma list; None if it holds no number."""
    s = _clean_numeric(s.strip())
    if not s:
        return None
    parts = s.split(",") if "," in s and not _THOUSANDS.fullmatch(s.strip("$ -")) else [s]
    values: list[Fraction] = []
    for part in parts:
        m = _NUM.search(part)
        value = _fraction(m) if m else None
        if value is None:
            return None
        values.append(value)
    return tuple(values)


_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _close(a: Fraction, b: Fraction) -> bool:
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL)


# ---------------------------------------------------------------------------------------------------------
# letters
# ---------------------------------------------------------------------------------------------------------

_MARKUP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|boxed)\s*\{|[*_`$}{]|\\[()\[\]]")
_LETTER_HEAD = re.compile(
    r"(?i:(?:option|choice|letter)\s*)?"
    r"(?:[(\[](?P<p>[A-Ja-j])[)\]]|(?P<u>[A-J])(?![\w'’-])|(?P<l>[a-j])(?=['’\"]|\s*[.):]?\s*$))"
)
_LETTER_INNER = re.compile(r"(?i:\b(?:option|choice)\s*)\(?([A-J])\)?(?![\w'])|\(([A-J])\)")
_BOLD_LETTER = re.compile(
    r"\*\*[ \t]*(?i:(?:option|choice|answer)[: \t]*)?\(?([A-J])\)?(?:[ \t]*[.):][^*\n]{0,200})?[ \t]*\*\*"
)
_LINE_LETTER = re.compile(r"^[ \t>*_-]*\(?([A-J])[).:\]](?=\s|$)", re.MULTILINE)
_OPTION_LETTER = re.compile(r"(?i:\b(?:option|choice)[ \t:]*)\(?([A-J])\)?(?![\w'])|\(([A-J])\)")
_LONE_LETTER = re.compile(r"^[ \t>*_#(\[]*([A-J])[ \t)*_.\]]*$", re.MULTILINE)
_WORD = re.compile(r"\w+")


def _norm_text(s: str) -> str:
    """Lower-case words only: the form texts and option texts are compared in."""
    return " ".join(_WORD.findall(s.lower()))


def _choice_letter(s: str, choices: Sequence[str] | None, whole: bool) -> str | None:
    """The letter of the one option whose text is ``s`` (``whole``) or appears in ``s``; None if ambiguous."""
    if not choices:
        return None
    text = f" {_norm_text(s)} "
    opts = [(LETTERS[i], _norm_text(str(c))) for i, c in enumerate(choices[: len(LETTERS)]) if c is not None]
    if whole:
        hits = [letter for letter, o in opts if o and text.strip() == o]
    else:
        found = [(letter, o) for letter, o in opts if o and f" {o} " in text]
        # an option contained in a longer option that also appears ("Paris" in "Paris, Texas") is not a hit
        hits = [letter for letter, o in found if not any(o != p and f" {o} " in f" {p} " for _, p in found)]
    return hits[0] if len(set(hits)) == 1 else None


def _letter_candidate(c: str, valid: str, choices: Sequence[str] | None) -> str | None:
    plain = _MARKUP.sub("", c).strip().lstrip("'\"‘“")
    m = _LETTER_HEAD.match(plain)
    if m:
        letter = (m.group("p") or m.group("u") or m.group("l")).upper()
        after = plain[m.end() : m.end() + 2]
        # "A farmer", "I think": an English word, not an option letter
        english_word = m.group("u") in ("A", "I") and after[:1] == " " and after[1:2].islower()
        if not english_word and letter in valid:
            return letter
    for m in _LETTER_INNER.finditer(plain):
        letter = m.group(1) or m.group(2)
        if letter in valid:
            return letter
    return _choice_letter(plain, choices, whole=True) or _choice_letter(plain, choices, whole=False)


def _last_letter(pattern: re.Pattern[str], s: str, valid: str, list_guard: bool) -> str | None:
    letters = [m.group(m.lastindex or 1) for m in pattern.finditer(s)]
    letters = [x for x in letters if x and x in valid]
    if not letters:
        return None
    if list_guard and len(set(letters)) >= 3:  # "A) .. B) .. C) ..": the options restated, not a pick
        return None
    return letters[-1]


def _extract_letter(s: str, choices: Sequence[str] | None) -> Extraction | None:
    valid = LETTERS[: len(choices)] if choices else LETTERS
    for rule, body in _marked(s):
        letter = _letter_candidate(body, valid, choices)
        if letter is not None:
            return Extraction(letter, rule)
    for rule, pattern, guard in (
        ("letter_bold", _BOLD_LETTER, False),
        ("letter_line", _LINE_LETTER, True),
        ("letter_option", _OPTION_LETTER, True),
        ("letter_lone", _LONE_LETTER, False),
    ):
        letter = _last_letter(pattern, s, valid, guard)
        if letter is not None:
            return Extraction(letter, rule)
    letter = _choice_letter(s, choices, whole=False)
    return Extraction(letter, "choice_text") if letter else None


_LETTER_VALUE = re.compile(r"\(?([A-Ja-j])\)?")


def _letter_value(s: str) -> str | None:
    if len(s) == 1 and s in LETTERS:  # already normalised (every extracted value): skip the regexes
        return s
    plain = _MARKUP.sub("", s).strip().strip(".").strip()
    m = _LETTER_VALUE.fullmatch(plain)
    return m.group(1).upper() if m else None


# ---------------------------------------------------------------------------------------------------------
# booleans
# ---------------------------------------------------------------------------------------------------------

_BOOL_WORDS = {"yes": "yes", "true": "yes", "correct": "yes", "no": "no", "false": "no", "incorrect": "no"}
_BOOL_HEAD = re.compile(r"[\W_]*(yes|no|true|false|correct|incorrect)\b", re.IGNORECASE)
_BOOL_BOLD = re.compile(r"\*\*[ \t]*(yes|no|true|false)[ \t.!]*\*\*", re.IGNORECASE)
_BOOL_LEAD = re.compile(r"^[\W_]*(yes|no|true|false)\b", re.IGNORECASE | re.MULTILINE)
_BOOL_ANY = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)


def _bool_word(word: str) -> str:
    return _BOOL_WORDS[word.lower()]


def _extract_boolean(s: str, choices: Sequence[str] | None) -> Extraction | None:
    for rule, body in _marked(s):
        m = _BOOL_HEAD.match(_MARKUP.sub("", body))
        if m:
            return Extraction(_bool_word(m.group(1)), rule)
    for rule, pattern in (
        ("boolean_bold", _BOOL_BOLD),
        ("boolean_lead", _BOOL_LEAD),
        ("boolean_last", _BOOL_ANY),
    ):
        last = None
        for last in pattern.finditer(s):
            pass
        if last is not None:
            return Extraction(_bool_word(last.group(1)), rule)
    return None


# ---------------------------------------------------------------------------------------------------------
# LaTeX
# ---------------------------------------------------------------------------------------------------------

_MATH_SEG = re.compile(
    r"\$\$([^$]{1,500})\$\$|\$([^$\n]{1,500})\$|\\\((.{1,500}?)\\\)|\\\[(.{1,500}?)\\\]", re.DOTALL
)
_LATEX_NOISE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)(?![a-zA-Z])|\\ ")
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")


def _clean_latex(s: str) -> str:
    s = s.strip()
    m = _MATH_SEG.search(s)
    if m:  # "the answer is $x^2$ since ..." -> the math
        s = next(g for g in m.groups() if g is not None)
    s = _TEXT_WRAP.sub(r"\1", s)
    s = _LATEX_NOISE.sub("", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("π", "\\pi").replace("√", "\\sqrt")
    s = re.sub(r"(?<![\\a-zA-Z])pi(?![a-zA-Z])", r"\\pi", s)
    return " ".join(s.strip().strip("$").rstrip(".").split())


def _last_math(s: str) -> str | None:
    """Body of the last ``$..$`` / ``$$..$$`` / ``\\(..\\)`` / ``\\[..\\]`` segment; rfind only, so linear time."""
    best: tuple[int, str] | None = None
    for open_, close in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        end = s.rfind(close)
        if end < 0:
            continue
        if open_ == "$" and end > 0 and s[end - 1] == "$":  # "$$x$$"
            open_, end = "$$", end - 1
        start = s.rfind(open_, 0, end)
        body = s[start + len(open_) : end].strip() if start >= 0 else ""
        if body and len(body) <= 500 and (best is None or end > best[0]):
            best = (end, body)
    return best[1] if best else None


_MATHY = re.compile(r"[\d\\]|^[A-Za-z]$")
_PLAIN_EXPR = re.compile(r"(?=.*[A-Za-z])(?!.*[A-Za-z]{3})[A-Za-z\s^_=+*/().,\-]+")


def _looks_like_math(s: str) -> bool:
    """ "x + y", "2x", "\\pi" are answers; "the answer is" or a lone "-" are not."""
    return bool(_MATHY.search(s) or _PLAIN_EXPR.fullmatch(s))


def _extract_latex(s: str, choices: Sequence[str] | None) -> Extraction | None:
    for rule, body in _marked(s):
        value = _clean_latex(body if rule == "boxed" else body.split(". ")[0])
        if value and (rule == "boxed" or _looks_like_math(value)):  # an explicit box may hold \text{...}
            return Extraction(value, rule)
    segment = _last_math(s)
    if segment:
        math = _clean_latex(segment)
        if math and _looks_like_math(math):
            return Extraction(math, "latex_math")
    number = _numbers(_clean_numeric(s), first=False)
    return Extraction(number, "last_number") if number is not None else None


def _latex_key(s: str) -> str:
    return _SPACES.sub("", _clean_latex(s))


_SPACES = re.compile(r"\s+")
_EXPONENT_SIMPLE = re.compile(r"\s*(\\[a-zA-Z]+|\d+(?:\.\d+)?|.)")
_POWER = re.compile(r"\^|\*\*")
_COMMANDS = re.compile(r"\\[a-zA-Z]+")
_VARIABLE = re.compile(r"[a-df-zA-Z]")  # a symbol other than Euler's e: the power stays symbolic
_BIG_OPS = re.compile(r"\\(?:sum|prod|int|lim|binom|choose|Gamma|operatorname)|\\uparrow|\bC\(")
_SMALL_FACTORIAL = re.compile(r"(?<![\d.])\d{1,2}!")
_LONG_DIGITS = re.compile(r"\d{7,}")
_DIGITS4 = re.compile(r"\d{4,}")
_DIGITS3_OR_POWER = re.compile(r"\d{3,}|\^|\*\*")


def _exponent(s: str, j: int) -> tuple[str, int]:
    """The exponent after a ``^`` ending at ``j`` and the index just past it."""
    k = j
    while k < len(s) and s[k] == " ":
        k += 1
    if k < len(s) and s[k] == "{":
        body = _braced(s, k)
        if body is None:
            return s[k:], len(s)
        return body, k + len(body) + 2
    m = _EXPONENT_SIMPLE.match(s, j)
    return (m.group(1), m.end()) if m else ("", j)


def latex_is_safe(s: str) -> bool:
    """Whether sympy surely finishes quickly on ``s``; we run math-verify with no timeout, so this is the bound.

    Refused (compared as normalised strings instead): over ``LATEX_MAX_CHARS``; numeric power towers
    (``10^{10^{10}}``, ``10**10**10``: a 10^10-digit integer); exponents of 4+ digits; factorials other than
    small literals (``(10^3)!``); big operators with 3+ digit or power bounds (``\\prod_{k=1}^{10^9}`` is a
    factorial of 10^9); nested ``\\exp``; 7+ digit literals.
    """
    if len(s) > LATEX_MAX_CHARS or _LONG_DIGITS.search(s) or s.count("\\exp") > 1:
        return False
    for m in _POWER.finditer(s):
        exp, after = _exponent(s, m.end())
        if len(exp) > 40 or _DIGITS4.search(exp) or "!" in exp:
            return False
        nested = _POWER.search(exp) or "\\exp" in exp or _POWER.match(s[after:].lstrip())
        if nested and not _VARIABLE.search(_COMMANDS.sub("", exp)):
            return False
    bangs = s.replace("\\!", "").count("!")
    if bangs and len(_SMALL_FACTORIAL.findall(s)) != bangs:
        return False
    return not (_BIG_OPS.search(s) and _DIGITS3_OR_POWER.search(s))


@lru_cache(maxsize=8_192)
def _mv_parse(s: str) -> tuple[Any, ...]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # parsing_timeout=None: math-verify's timeout is signal.alarm, which fails off the main thread; our bound
    # is latex_is_safe() + LATEX_MAX_CHARS, checked before we get here.
    return tuple(
        parse(
            f"${s}$",
            extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
            parsing_timeout=None,
        )
    )


def _latex_equal(pred: str, gold: str) -> bool:
    if _latex_key(pred) == _latex_key(gold):
        return True
    p, g = _number_list(pred), _number_list(gold)
    if p is not None and g is not None and _is_plain_number(pred) and _is_plain_number(gold):
        return len(p) == len(g) and all(_close(a, b) for a, b in zip(p, g))
    p_clean, g_clean = _clean_latex(pred), _clean_latex(gold)
    if not (latex_is_safe(p_clean) and latex_is_safe(g_clean)):
        return False
    from math_verify import verify

    gold_parsed, pred_parsed = _mv_parse(g_clean), _mv_parse(p_clean)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))


_PLAIN_NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?(/\d+)?")


def _is_plain_number(s: str) -> bool:
    s = s.strip().strip("$").strip()
    return bool(s) and any(ch.isdigit() for ch in s) and _PLAIN_NUMBER.fullmatch(s) is not None


# ---------------------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def _text_key(s: str) -> str:
    return " ".join(_ARTICLES.sub(" ", _norm_text(unicodedata.normalize("NFKC", _MARKUP.sub("", s)))).split())


def _clean_text(s: str) -> str:
    return " ".join(_MARKUP.sub("", s).split()).strip().rstrip(".!").strip()[:MAX_CANDIDATE_CHARS]


def _extract_text(s: str, choices: Sequence[str] | None) -> Extraction | None:
    for rule, body in _marked(s):
        value = _clean_text(body)
        if value:
            return Extraction(value, rule)
    for line in reversed(s[-4 * MAX_CANDIDATE_CHARS :].splitlines()):
        value = _clean_text(line)
        if value:
            return Extraction(value, "last_line")
    return None


# ---------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------

_EXTRACTORS: dict[str, Callable[[str, Sequence[str] | None], Extraction | None]] = {
    "numeric": _extract_numeric,
    "letter": _extract_letter,
    "boolean": _extract_boolean,
    "latex": _extract_latex,
    "text": _extract_text,
}


def _check_type(answer_type: str) -> None:
    if answer_type not in _EXTRACTORS:
        raise ValueError(f"unknown answer_type {answer_type!r}; valid: {', '.join(ANSWER_TYPES)}")


def extract_answer(
    text: str | bytes | None, answer_type: str, choices: Sequence[str] | None = None
) -> Extraction | None:
    """The answer stated in the final response of ``text``, or None; see the module docstring."""
    _check_type(answer_type)
    response = _final_response(text)
    if not response:
        return None
    found = _EXTRACTORS[answer_type](response, choices)
    if found is None or not found.value:
        return None
    return found


@lru_cache(maxsize=65_536)
def _gold(gold: str, answer_type: str) -> Any:
    """Parsed gold, cached (a question's gold is compared once per attempt); ValueError names a bad gold."""
    if answer_type == "numeric":
        value = _number_list(gold) if isinstance(gold, str) else None
        if value is None:
            raise ValueError(
                f"numeric gold answer {gold!r} is not a number; canonical golds look like '18', '0.5'"
            )
        return value
    if answer_type == "letter":
        letter = _letter_value(gold) if isinstance(gold, str) else None
        if letter is None:
            raise ValueError(f"letter gold answer {gold!r} is not one of A..J")
        return letter
    if answer_type == "boolean":
        boolean = _BOOL_WORDS.get(str(gold).strip().lower().rstrip("."))
        if boolean is None:
            raise ValueError(f"boolean gold answer {gold!r} is not yes/no (or true/false)")
        return boolean
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"{answer_type} gold answer {gold!r} is empty")
    return _text_key(gold) if answer_type == "text" else gold


def is_correct(prediction: str | None, gold: str, answer_type: str) -> bool:
    """Whether an extracted ``prediction`` matches ``gold`` under ``answer_type``'s equivalence."""
    _check_type(answer_type)
    expected = _gold(gold, answer_type)
    if prediction is None or not isinstance(prediction, str) or not prediction.strip():
        return False
    if answer_type == "numeric":
        got = _number_list(prediction)
        return (
            got is not None and len(got) == len(expected) and all(_close(a, b) for a, b in zip(got, expected))
        )
    if answer_type == "letter":
        return _letter_value(prediction) == expected
    if answer_type == "boolean":
        return _BOOL_WORDS.get(prediction.strip().lower().rstrip(".")) == expected
    if answer_type == "text":
        return _text_key(prediction) == expected
    return _latex_equal(prediction, expected)


def grade(
    text: str | bytes | None, gold: str, answer_type: str, choices: Sequence[str] | None = None
) -> Grade:
    """Extract from ``text`` and verify against ``gold`` in one call (what generate/evaluate store per row)."""
    found = extract_answer(text, answer_type, choices)
    if found is None:
        _gold(gold, answer_type)  # a bad gold is an error even when nothing was extracted
        return Grade(None, "none", False)
    return Grade(found.value, found.rule, is_correct(found.value, gold, answer_type))


def gold_error(answer: str, answer_type: str) -> str | None:
    """Why a canonical answer cannot be graded (``answers`` raises ValueError naming it), or None."""
    try:
        is_correct(None, answer, answer_type)
    except ValueError as err:
        return str(err)
    return None
