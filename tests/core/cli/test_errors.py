"""Bad input on the command line is one ``error:`` line and exit status 2 (UserError);
a bug keeps its traceback."""

from __future__ import annotations

import pytest

from core.cli.main import main
from core.errors import InputError, MissingInputError, UserError


@pytest.mark.parametrize(
    "argv, needle, lines",
    [
        (["train", "model.arch=Foo", "data.limit=20", "data.bands=[4,3,2,8]"], "unknown architecture 'Foo'", 1),
        # Every problem of a check is reported, one line each: the tile and the model.
        (["segment", "{scene}", "{scene}", "--out", "{tmp}/o", "--tile", "0"], "tile size must be positive", 2),
        (["evaluate", "{tmp}/no-such-run"], "no-such-run", 1),
        (["compare", "{tmp}", "{tmp}"], "no metrics.json", 1),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(argv, needle, lines, solafune, scenes, tmp_path, capfd):
    fill = {"scene": str(scenes / "rgbn_haiti_5m.tif"), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    if argv[0] == "train":
        argv += [f"data.path={solafune}", f"out_dir={tmp_path}"]
    assert main(argv) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == lines and needle in err[0]


def test_user_error_classes_keep_their_builtin_bases():
    # Callers that caught ValueError / FileNotFoundError before keep working.
    assert issubclass(InputError, ValueError) and issubclass(InputError, UserError)
    assert issubclass(MissingInputError, FileNotFoundError)
    assert InputError("x", field="model.arch").field == "model.arch"
