"""One exception type for every input problem a user can fix, so stages can print one line."""


class MedsegError(Exception):
    """A problem with the user's input (params, files) that is reported as one line, no traceback."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """`err` as "<Type>: <first line of its message>" (at most `limit` characters of it): libraries'
    messages (the ONNX exporter, onnxruntime, smp) run to pages, and an error here is one line."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {line[:limit] if limit else line}"


def cannot(path: object, what: str, err: BaseException, hint: str = "") -> MedsegError:
    """The one-line error for a file medseg could not `what` (e.g. "read NIfTI"), naming it and why."""
    return MedsegError(f"{path}: cannot {what} ({first_line(err)}){hint}")
