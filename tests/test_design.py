"""Design variables, optional layers and sweeps (issue 11):
``[[conv3-relu]*N - pool?]*M - [fc(64)-relu]*K - fc``.

The expected counts are computed here from CS231n's rules (3x3 "same" convolutions, 2x2/2
max pools, the width rule "32 filters, doubled after each pool"), never read from cnnc.
"""
from __future__ import annotations

import json

import pytest

import cnnc
from cnnc.cli.main import main
from cnnc.lang.design import parse_sweep
from cnnc.tools.sweep import sweep
from cnnc.errors import SourceError

RULE = "[[conv3-relu]*N - pool?]*M - [fc(64)-relu]*K - fc"


def expected(n, m, k, size=32, channels=3, classes=10, pools="auto"):
    """(params, MACs, activation values per image, pools kept) of RULE, by hand."""
    params = macs = acts = 0
    c, h, width, kept = channels, size, 32, 0
    for _ in range(m):
        for _ in range(n):
            params += (9 * c + 1) * width
            macs += width * h * h * 9 * c
            acts += 2 * width * h * h  # conv and relu outputs
            c = width
        fits = h >= 2 and h % 2 == 0
        if pools == "on" or (pools == "auto" and fits):
            h //= 2
            width *= 2
            kept += 1
            acts += c * h * h
    fan_in = c * h * h
    for _ in range(k):
        params += (fan_in + 1) * 64
        macs += fan_in * 64
        acts += 2 * 64
        fan_in = 64
    params += (fan_in + 1) * classes
    macs += fan_in * classes
    acts += classes
    return params, macs, acts, kept


def kept_for_backward(n, m, k, size=32, classes=10):
    """(activation values stored per image, bytes saved for backward per image) of RULE: a
    ReLU fused into its conv or fc shares that layer's buffer; a max pool keeps an int32
    argmax per output (the lowering's rule, counted by hand)."""
    stored = saved = 0
    h, width = size, 32
    for _ in range(m):
        stored += n * width * h * h  # the conv outputs (their ReLUs run inside them)
        if h >= 2 and h % 2 == 0:
            h //= 2
            stored += width * h * h
            saved += 4 * width * h * h
            width *= 2
    stored += k * 64 + classes
    return stored, saved


def training_bytes(params, design, size=32, channels=3, batch=1):
    """Weights + gradients + momentum + stored activations and their gradients + what the
    pools keep + the input batch."""
    stored, saved = kept_for_backward(*design, size=size)
    return 4 * (3 * params + 2 * stored * batch + channels * size * size * batch) + saved * batch


def test_the_issue_command_checks_one_design(capsys):
    rc = main(["check", "-e", RULE, "--input", "3x32x32", "--classes", "10", "--set", "N=2,M=3,K=1", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    params, macs, acts, _ = expected(2, 3, 1)
    assert d["total_params"] == params and d["total_macs"] == macs
    assert d["training_memory_bytes"] == training_bytes(params, (2, 3, 1))
    assert d["design"] == {"N": 2, "M": 3, "K": 1}
    assert sum(r["type"] == "maxpool" for r in d["layers"]) == 3


def test_sweep_rows_match_an_independent_count(capsys):
    rc = main(["check", "-e", RULE, "--input", "3x32x32", "--classes", "10", "--set", "K=1",
               "--sweep", "N=1..3,M=1..4", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    rows = d["designs"]
    assert [(r["values"]["N"], r["values"]["M"]) for r in rows] == [(n, m) for n in (1, 2, 3) for m in (1, 2, 3, 4)]
    for r in rows:
        n, m = r["values"]["N"], r["values"]["M"]
        params, macs, acts, _ = expected(n, m, 1)
        assert r["ok"] and r["total_params"] == params and r["total_macs"] == macs, r
        assert r["output_shape"] == [10]
        assert r["training_memory_bytes"] == training_bytes(params, (n, m, 1))
    # the table: one row per design, the parameters of each in it
    rc = main(["check", "-e", RULE, "--input", "3x32x32", "--classes", "10", "--set", "K=1",
               "--sweep", "N=1..3,M=1..4"])
    out = capsys.readouterr().out
    lines = [ln.split() for ln in out.splitlines()]
    body = [ln for ln in lines if len(ln) >= 3 and ln[0].isdigit() and ln[1].isdigit()]
    assert len(body) == 12
    for ln in body:
        assert ln[2] == f"{expected(int(ln[0]), int(ln[1]), 1)[0]:,}"


def test_sweep_reports_designs_that_do_not_fit_with_their_position():
    text = "[[conv3-relu]*N - pool?]*M - conv3(stride=2) - fc"
    s = sweep(text, "M=1..3", given={"N": 1}, input="3x32x32", classes=10)
    for row, size in zip(s.rows, (16, 8, 4)):
        assert row.error is not None and row.error.kind == "fit"
        assert (row.error.line, row.error.column) == (1, text.index("conv3(stride=2)") + 1)
        assert f"its {size}x{size} input" in row.error.message
    s = sweep(text.replace("stride=2", "stride=2, pad=1"), "M=1..3", given={"N": 1}, input="3x32x32",
              classes=10)
    assert all(r.error is None for r in s.rows)


def test_optional_pool_off_drops_every_instance():
    m = cnnc.compile(RULE, input="3x32x32", classes=10, variables="N=2,M=3,K=1,pool=off")
    params, macs, acts, kept = expected(2, 3, 1, pools="off")
    assert kept == 0 and m.summary.total_params == params and m.summary.total_macs == macs
    assert not any(r.type == "maxpool" for r in m.summary.rows)
    assert m.dropped == ()  # switched off, not dropped for not fitting


def test_optional_pool_is_dropped_automatically_where_it_would_not_fit():
    m = cnnc.compile(RULE, input="3x32x32", classes=10, variables={"N": 1, "M": 7, "K": 1})
    params, macs, acts, kept = expected(1, 7, 1)
    assert kept == 5  # 32 -> 1; the 6th and 7th pools would leave nothing
    assert sum(r.type == "maxpool" for r in m.summary.rows) == 5
    assert m.summary.total_params == params and m.summary.total_macs == macs
    assert [d.notes for d in m.dropped] == [("in repetition 6 of [..]*7, line 1",),
                                            ("in repetition 7 of [..]*7, line 1",)]
    assert all("leaves nothing" in d.reason for d in m.dropped)
    assert "dropped      pool? at 1:19" in m.summary_text()
    # an odd size: the pool would lose a real row and column ("does not fit") and is dropped too
    m = cnnc.compile("[conv3(4) - pool?]*2 - fc", input="3x6x6", classes=2)
    assert [r.output_shape for r in m.summary.rows if r.type == "maxpool"] == [(4, 3, 3)]
    assert "does not fit" in m.dropped[0].reason


def test_optional_pool_forced_on_must_fit():
    with pytest.raises(SourceError) as info:
        cnnc.compile(RULE, input="3x32x32", classes=10, variables="N=1,M=7,K=1,pool=on")
    err = info.value
    assert err.kind == "empty" and (err.line, err.column) == (1, RULE.index("pool?") + 1)
    assert err.notes == ("in repetition 6 of [..]*7, line 1",)


def test_let_lines_and_set_overrides():
    text = "let N = 2\nlet M = N + 1\nlet K = 1\ninput 3x32x32\nclasses 10\n" + RULE
    m = cnnc.compile(text)
    assert m.summary.total_params == expected(2, 3, 1)[0]
    m = cnnc.compile(text, variables="N=1")  # M follows N: 2
    assert m.summary.total_params == expected(1, 2, 1)[0]
    m = cnnc.compile(text, variables={"M": 4, "pool": "off"})
    assert m.summary.total_params == expected(2, 4, 1, pools="off")[0]
    m = cnnc.compile("let pool = off\nlet N = 1\n[conv3 - pool?]*N - fc", input="3x8x8", classes=3)
    assert not any(r.type == "maxpool" for r in m.summary.rows)


def test_variables_in_arguments_and_definitions():
    text = "block(c) = conv3(c) - relu - conv3(c*F)\n[block(C) - pool?]*M - fc(H) - fc"
    m = cnnc.compile(text, input="3x16x16", classes=5, variables="C=8,F=2,M=2,H=20")
    a = m.analysis
    convs = [n for n in a.order if a.layer(n).type.name == "conv"]
    assert [a.shapes[n][0] for n in convs] == [8, 16, 8, 16]
    assert a.info["fc_1"].param_count == (16 * 4 * 4 + 1) * 20


@pytest.mark.parametrize("text, given, line, col, needle", [
    (RULE, "N=2,K=1", 1, RULE.index("*M") + 2, "variable 'M' is not set"),
    ("conv3(C) - fc", None, 1, 7, "variable 'C' is not set"),
    ("let N = Q + 1\n[conv3]*N - fc", None, 1, 9, "variable 'Q' is not set"),
    ("let N = 2\nlet N = 3\nconv3*N - fc", None, 2, 5, "variable 'N' is set twice"),
    ("let N = on\nconv3*N - fc", None, 1, 5, "'N' is not an optional layer"),
])
def test_design_errors_in_the_model_are_positioned(text, given, line, col, needle):
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="3x8x8", classes=3, variables=given, filename="m.cnn")
    err = info.value
    assert needle in err.message, str(err)
    assert (err.line, err.column) == (line, col), str(err)
    assert str(err).startswith(f"m.cnn:{line}:{col}: error: ")


@pytest.mark.parametrize("flag, text, col, needle", [
    ("--set", "N=2,Q=4", 5, "no variable or optional layer 'Q'"),
    ("--set", "N=two", 3, "'two' is not a number"),
    ("--set", "N=2,pool=3", 5, "'pool' is an optional layer: set it to on or off"),
    ("--set", "N=2,N=3", 5, "'N' is set twice"),
    ("--set", "N", 1, "has no '='"),
    ("--sweep", "N=1..3,M=4..2", 10, "bad range '4..2'"),
    ("--sweep", "N=1..x", 3, "bad range '1..x'"),
    ("--sweep", "N=1..2,Z=1..2", 8, "no variable or optional layer 'Z'"),
])
def test_set_and_sweep_errors_are_positioned_in_their_text(capsys, flag, text, col, needle):
    argv = ["check", "-e", RULE, "--input", "3x32x32", "--classes", "10"]
    argv += [flag, text]
    if flag == "--sweep":
        argv += ["--set", "K=1"]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith(f"{flag}:1:{col}: error: "), err
    assert needle in err
    assert "    " + text in err  # the text with a caret under it


def test_sweep_over_a_switch_and_its_order():
    axes = parse_sweep("M=1..2,pool=on|off,K=3")
    assert [(n, v) for n, v, _ in axes] == [("M", (1, 2)), ("pool", (True, False)), ("K", (3,))]
    s = sweep(RULE, "pool=on|off", given={"N": 1, "M": 2, "K": 1}, input="3x32x32", classes=10)
    assert [r.values["pool"] for r in s.rows] == ["on", "off"]
    assert [r.params for r in s.rows] == [expected(1, 2, 1, pools=p)[0] for p in ("on", "off")]


def test_a_design_trains_its_network():
    np = pytest.importorskip("numpy")
    m = cnnc.compile(RULE, input="1x8x8", classes=3, variables="N=1,M=2,K=1")
    net = m.network(seed=0)
    assert net.forward(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("text, col", [("[conv3 - pool]? - fc", 15), ("pool?? - fc", 6), ("pool*2? - fc", 7)])
def test_only_layers_and_calls_can_be_optional(text, col):
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="3x8x8", classes=2)
    assert info.value.message == "only a layer or a definition call can be optional"
    assert (info.value.line, info.value.column) == (1, col)


def test_an_optional_definition_call_is_dropped_whole():
    m = cnnc.compile("b(c) = conv3(c) - pool\n[b(8)?]*4 - fc", input="3x8x8", classes=2)
    assert sum(r.type == "conv" for r in m.summary.rows) == 3  # 8 -> 4 -> 2 -> 1, the 4th block left out
    assert len(m.dropped) == 1 and "repetition 4" in m.dropped[0].describe()
