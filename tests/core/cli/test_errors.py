"""Bad input on the command line is one ``error:`` line and exit status 2 (UserError);
a bug keeps its traceback."""

from __future__ import annotations

import pytest

from core.cli.main import main
from core.errors import InputError, MissingInputError, UserError


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "model.arch=Foo", "data.limit=20", "data.bands=[4,3,2,8]"], "unknown architecture 'Foo'"),
        (["segment", "{scene}", "{scene}", "--out", "{tmp}/o", "--tile", "0"], "tile size must be positive"),
        (["evaluate", "{tmp}/no-such-run"], "no-such-run"),
        (["compare", "{tmp}", "{tmp}"], "no metrics.json"),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(argv, needle, solafune, scenes, tmp_path, capfd):
    fill = {"scene": str(scenes / "rgbn_haiti_5m.tif"), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    if argv[0] == "train":
        argv += [f"data.path={solafune}", f"out_dir={tmp_path}"]
    assert main(argv) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and needle in err[0]


def test_user_error_classes_keep_their_builtin_bases():
    # Callers that caught ValueError / FileNotFoundError before keep working.
    assert issubclass(InputError, ValueError) and issubclass(InputError, UserError)
    assert issubclass(MissingInputError, FileNotFoundError)
    assert InputError("x", field="model.arch").field == "model.arch"
