"""The bad-input matrix (tools/abi_matrix) over every function of the C header: each case runs in a
forked child and must return a status with a message, never crash or panic."""

import shutil
import subprocess
from collections import Counter

import pytest

from tools.abi_matrix import generate
from tools.abi_matrix.generate import HEADER, MissingRecipe, build, build_cases, parse_header, problems, run

LIB_DIR = generate.ROOT / "bindings/python/acestep_runtime/_native"


def test_every_function_of_the_header_is_in_the_matrix():
    text = HEADER.read_text(encoding="utf-8")
    functions = parse_header(text)
    # Counted independently of the parser: every line that declares an ace_ function.
    declared = [line for line in text.splitlines() if " ace_" in line and line.rstrip().endswith(");")
                and not line.startswith(("//", " "))]
    assert len(functions) == len(declared) > 80
    cases = build_cases(functions)
    per_function = Counter(c.function for c in cases)
    assert set(per_function) == {f.name for f in functions}
    # every parameter gets at least one bad value, besides the valid call
    for f in functions:
        assert per_function[f.name] >= 1 + len(f.params), f.name


def test_a_function_without_a_recipe_fails_loudly():
    header = HEADER.read_text(encoding="utf-8") + "\nAceStatus ace_widget_frob(const char *widget_json, char **out);\n"
    with pytest.raises(MissingRecipe, match=r"(?s)ace_widget_frob\(const char \*widget_json, char \*\*out\).*recipes\.py"):
        build_cases(parse_header(header))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    if not (LIB_DIR / "libacestep_runtime.so").exists():
        pytest.fail("the core library is not built: run scripts/build_core.sh")
    try:
        return build(tmp_path_factory.mktemp("abi_matrix"), LIB_DIR)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the matrix failed (is the library older than the header? run "
                    f"scripts/build_core.sh):\n{e.stderr[-3000:]}")


def test_bad_inputs_get_a_status_and_a_message_never_a_crash(matrix):
    binary, cases = matrix
    outcomes = run(binary, cases)
    counts = Counter(o.status for o in outcomes)
    print(f"\n{len(outcomes)} cases, statuses {dict(sorted(counts.items()))}")
    assert not problems(outcomes), "\n".join(problems(outcomes))
    # The rules did bite: many cases failed with the status their kind of input calls for.
    assert counts["2"] > 100 and counts["4"] > 20 and counts["5"] > 10


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_matrix_under_valgrind_finds_no_memory_error(matrix):
    """A sample of the matrix under memcheck, to stay within the test command's time: every
    function's valid call and its NaN-buffer, overflowing-shape and array-for-object cases (the
    error paths that read the most). `python -m tools.abi_matrix --valgrind` runs all of it."""
    binary, cases = matrix
    sample = [i for i, c in enumerate(cases) if c.param == "-" or c.value in ("nan", "huge-dims", "array")]
    outcomes = run(binary, cases, valgrind=True, timeout_s=300, only=sample)
    print(f"\n{len(outcomes)} cases under valgrind")
    assert len(outcomes) == len(sample)
    assert not problems(outcomes), "\n".join(problems(outcomes))
