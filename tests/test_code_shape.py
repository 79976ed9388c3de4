"""The shape the code keeps (issue 25): no function in medseg/ or stages/ longer than 50 lines or taking
more than 6 parameters, so a reader sees each step whole and hand-offs are typed objects, not long
argument lists. bench/ is excepted: its timing loops mirror the seeds' scripts on purpose."""
import ast

from tests.conftest import REPO

MAX_LINES, MAX_PARAMS = 50, 6


def functions():
    for path in sorted([*(REPO / "medseg").rglob("*.py"), *(REPO / "stages").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(REPO), node


def test_no_function_is_too_long_or_takes_too_many_parameters():
    too_long, too_many = [], []
    for path, fn in functions():
        if fn.end_lineno - fn.lineno + 1 > MAX_LINES:
            too_long.append(f"{path}:{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)")
        params = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
        if len(params) > MAX_PARAMS:
            too_many.append(f"{path}:{fn.name} ({len(params)} parameters)")
    assert not too_long and not too_many, too_long + too_many
