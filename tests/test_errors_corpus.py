"""A corpus of malformed models: every mistake is reported at the right line and column
(1-based), with the right kind, a useful message, and a caret under the right column.

Each case is (id, model text, line, column, kind, a substring of the message[, hint
substring[, compile keyword arguments]]). Unless a case gives its own keyword
arguments, it is compiled with ``classes=10`` and, when the text has no ``input``
header, ``input="3x32x32"``.
"""
from __future__ import annotations

import pytest

import cnnc
from cnnc import SourceError

IN = "input 3x32x32\n"  # line 1 of cases that need a header

# fmt: off
CASES = [
    # ---- syntax ---------------------------------------------------------------------------
    ("unclosed-paren", "conv3 - (relu | relu", 1, 9, "syntax", "'(' is never closed", "add ')'"),
    ("unclosed-bracket", "[conv3 - relu]*2 - [conv3 - relu", 1, 20, "syntax", "'[' is never closed", "add ']'"),
    ("unclosed-bracket-multiline", "conv3 - [relu -\n  conv3 - relu\npool", 1, 9, "syntax",
     "'[' is never closed", "line 3 was read as part of it"),
    ("extra-paren", "conv3 - relu)", 1, 13, "syntax", "')' closes nothing", "remove it"),
    ("extra-bracket", "[conv3 - relu]*2]", 1, 17, "syntax", "']' closes nothing", None),
    ("missing-dash", "conv3(16) relu", 1, 11, "syntax", "unexpected 'relu'", "join layers with '-'"),
    ("missing-dash-mid", "conv3 - relu pool - fc", 1, 14, "syntax", "unexpected 'pool'", "'-'"),
    ("missing-dash-two-names", "conv3 relu", 1, 7, "syntax", "missing '-' between 'conv3' and 'relu'", None),
    ("missing-dash-two-names-then-more", "conv3 relu - pool", 1, 7, "syntax",
     "missing '-' between 'conv3' and 'relu'", "joined with '-'"),
    ("second-expression", "conv3 - relu\npool - fc", 2, 1, "syntax", "a second network expression",
     "join the lines with '-'"),
    ("second-expression-after-header", IN + "conv3 - relu\n\n# more\nfc", 5, 1, "syntax",
     "a second network expression", None),
    ("operator-at-end", "conv3 - relu -", 1, 14, "syntax", "unexpected end of the text", None),
    ("operator-at-end-then-comment", "conv3 - relu -   # more to come\n", 1, 14, "syntax",
     "unexpected end of the text", None),
    ("bad-character", "conv3 - relu - $", 1, 16, "syntax", "unexpected character '$'", None),
    ("bad-character-semicolon", "conv3; relu", 1, 6, "syntax", "unexpected character ';'",
     "joined with '-'"),
    ("bad-character-unicode-dash", "conv3 \u2013 relu", 1, 7, "syntax", "unexpected character", None),
    ("mixed-concat-sum", "conv3 - (relu | relu + relu)", 1, 22, "syntax", "'|' and '+' are mixed",
     "( (a | b) + c )"),
    ("mixed-sum-concat", "conv3 - (relu + relu | relu)", 1, 22, "syntax", "'|' and '+' are mixed", None),
    ("empty-parens", "conv3 - ()", 1, 10, "syntax", "unexpected ')'", None),
    ("sum-outside-parens", "conv3 - relu + id", 1, 14, "syntax", "'+' outside parentheses", "( a + b ) sums"),
    ("concat-outside-parens", "conv1(4) | conv3(4)", 1, 10, "syntax", "'|' outside parentheses", None),
    ("sum-in-square-brackets", "[relu + relu]*2", 1, 7, "syntax", "'+' outside parentheses", None),
    ("bar-inside-arguments", "conv3(3 | 4)", 1, 9, "syntax", "unexpected '|'", None),
    ("setting-then-operator", "data mnist - conv3", 1, 12, "syntax", "unexpected '-'", None),
    ("empty-brackets", "conv3 - []*2", 1, 10, "syntax", "unexpected ']'", None),
    ("float-count", "conv3*2.5", 1, 7, "syntax", "unexpected '2.5'", None),
    ("shape-in-argument", "conv(8, size=3x1)", 1, 14, "syntax", "unexpected '3x1'", "suffix"),
    ("deep-nesting", "[" * 70 + "conv3" + "]" * 70, 1, 65, "syntax", "nested more than 64 deep", None),

    # ---- unknown layers ----------------------------------------------------------------------
    ("unknown-cnov3", "cnov3 - relu", 1, 1, "unknown-layer", "unknown layer 'cnov3'", "'conv3'"),
    ("unknown-reul", "conv3 - reul - pool", 1, 9, "unknown-layer", "unknown layer 'reul'", "'relu'"),
    ("unknown-maxpol3", "conv3 - maxpol3(stride=2, pad=1)", 1, 9, "unknown-layer", "'maxpol3'", "'maxpool3'"),
    ("unknown-misspelled-definition", IN + "block(c) = conv3(c) - relu\nblok(16) - fc", 3, 1,
     "unknown-layer", "unknown layer 'blok'", "'block'"),
    ("unknown-no-close-match", "conv3 - zzzzzz", 1, 9, "unknown-layer", "unknown layer 'zzzzzz'",
     "cnnc layers"),
    ("internal-layer-name", "conv3 - concat", 1, 9, "unknown-layer", "'concat' is not a layer you can write",
     "( a | b )"),
    ("suffix-on-relu", "conv3 - relu3", 1, 9, "unknown-layer", "relu takes no size suffix", "write relu"),
    ("suffix-on-dropout", "conv3 - dropout2(0.5)", 1, 9, "unknown-layer", "dropout takes no size suffix", None),

    # ---- arguments ----------------------------------------------------------------------------
    ("unknown-keyword", "conv3(16, strid=2)", 1, 11, "argument", "conv has no argument 'strid'",
     "did you mean 'stride'?"),
    ("unknown-keyword-pool", "conv3 - maxpool3(sride=2)", 1, 18, "argument", "has no argument 'sride'",
     "'stride'"),
    ("wrong-type-float-filters", "conv3(16.5)", 1, 7, "argument", "must be an integer", None),
    # a bare name where a number goes is a design variable (issue 11): unset here
    ("wrong-type-name", "conv3(sixteen)", 1, 7, "variable", "variable 'sixteen' is not set", "--set sixteen="),
    ("dropout-out-of-range", "conv3 - dropout(1.5)", 1, 17, "argument", "must be a number in [0, 0.99], got 1.5", None),
    ("negative-stride", "conv3(16, stride=-1)", 1, 11, "argument", "'stride' of conv must be an integer >= 1, got -1", None),
    ("pad-foo", "conv3(16, pad=foo)", 1, 11, "argument", "'pad' of conv must be an integer >= 0, same or valid, got 'foo'", None),
    ("too-many-positional", "conv3(16, 2)", 1, 11, "argument", "conv takes at most 1 positional argument", "usage: convN("),
    ("positional-to-relu", "conv3 - relu(2)", 1, 14, "argument", "relu takes no positional arguments", None),
    ("argument-twice", "conv3(16, filters=8)", 1, 11, "argument", "argument 'filters' of conv is given twice", None),
    ("keyword-twice", "conv3(16, stride=2, stride=1)", 1, 21, "argument", "'stride' of conv is given twice", None),
    ("size-suffix-and-keyword", "conv3(16, size=3)", 1, 11, "argument", "the size of conv3 is given twice", None),
    ("conv-without-size", "conv(16)", 1, 1, "argument", "conv needs a window size", "conv3"),
    ("zero-window", "conv3 - maxpool0", 1, 9, "argument", "window size must be at least 1", None),
    ("repeat-zero", "conv3*0", 1, 7, "argument", "a repetition count must be at least 1, got 0", None),
    ("division-by-zero", "conv3(64/0)", 1, 7, "argument", "division by zero", None),
    ("pool-pad-too-large", "conv3 - maxpool2(pad=2)", 1, 18, "argument", "pad=2 is more than half", None),
    ("pad-same-even-window", "conv2(8, pad=same)", 1, 10, "argument", "pad=same needs an odd window", "pad=0"),
    ("bool-argument", "conv3(8, bias=maybe)", 1, 10, "argument", "must be true or false", None),

    # ---- header --------------------------------------------------------------------------------
    ("unknown-setting", IN + "clases 10\nconv3 - fc", 2, 1, "header", "unknown setting 'clases'",
     "did you mean 'classes'?"),
    ("unknown-setting-no-match", IN + "frobnicate 3\nconv3", 2, 1, "header", "unknown setting 'frobnicate'",
     "settings: input"),
    ("input-four-dims", "input 3x32x32x2\nconv3", 1, 7, "header",
     "input must be a shape CxHxW (an image) or CxL (a sequence) with positive sizes, got 3x32x32x2",
     "input 1x100", {}),
    ("conv3x3-in-1d-network", "input 1x100\nconv3 - conv3x3", 2, 9, "shape",
     "conv3x3 has a 2-D window, but the network is 1-D", "write conv3", {}),
    ("1d-doesnt-fit", "input 1x7\nconv3(stride=3)", 2, 1, "fit", "does not fit its length-7 input",
     "position 7 of the input is never covered", {}),
    ("input-twice", "input 3x32x32\ninput 1x28x28\nconv3", 2, 1, "header", "'input' is set twice (first on line 1)",
     None, {}),
    ("input-zero", "input 3x0x32\nconv3", 1, 7, "header", "positive sizes", None, {}),
    ("classes-zero", IN + "classes 0\nconv3 - fc", 2, 9, "header", "classes must be at least 1, got 0", None, {}),
    ("optimizer-bogus", IN + "optimizer bogus\nconv3", 2, 11, "header",
     "optimizer must be one of sgd, adam, adamw, got 'bogus'", None),
    ("width-float", IN + "width 2.5\nconv3", 2, 7, "header", "width must be an integer", None),
    ("nesterov-bad", IN + "nesterov 3\nconv3", 2, 10, "header", "nesterov must be true or false", None),
    ("header-after-shape-on-line", "input 3x32x32 conv3", 1, 15, "syntax", "unexpected 'conv3'", None, {}),

    # ---- definitions -------------------------------------------------------------------------
    ("undefined-definition", IN + "conv3 - block(16)", 2, 9, "unknown-layer", "unknown layer 'block'", None),
    ("recursive-direct", IN + "b(c) = conv3(c) - b(c)\nb(8)", 2, 19, "definition",
     "definition 'b' is recursive (b -> b)", "use [..]*N"),
    ("recursive-mutual", IN + "a(c) = conv3(c) - b(c)\nb(c) = relu - a(c)\na(8)", 3, 15, "definition",
     "definition 'a' is recursive (a -> b -> a)", None),
    ("recursive-three", IN + "a = b\nb = c - relu\nc = [a]*2\nconv3 - a", 4, 6, "definition",
     "is recursive (a -> b -> c -> a)", None),
    ("definition-wrong-arg-count", IN + "blk(c, s) = conv3(c, stride=s)\nblk(8)", 3, 1, "definition",
     "definition 'blk' takes 2 arguments, 1 given", "blk is defined on line 2 as blk(c, s)"),
    ("definition-too-many-args", IN + "blk(c) = conv3(c)\nconv3 - blk(8, 2)", 3, 9, "definition",
     "takes 1 argument, 2 given", None),
    ("definition-keyword-args", IN + "blk(c, s) = conv3(c, stride=s)\nblk(8, s=1)", 3, 8, "definition",
     "definition 'blk' takes its arguments by position", None),
    ("definition-hides-builtin", IN + "relu(c) = conv3(c)\nrelu(8)", 2, 1, "definition",
     "would hide the built-in layer 'relu'", "choose another name"),
    ("definition-hides-suffixed-builtin", IN + "conv5(c) = conv3(c)\nconv5(8)", 2, 1, "definition",
     "would hide the built-in layer 'conv5'", None),
    ("definition-twice", IN + "b(c) = conv3(c)\nb(c) = conv5(c)\nb(8)", 3, 1, "definition",
     "definition 'b' is defined twice (first on line 2)", None),
    ("definition-duplicate-parameter", IN + "b(c, c) = conv3(c)\nb(8, 8)", 2, 6, "definition",
     "parameter 'c' appears twice in definition 'b'", None),
    ("definition-non-name-parameter", IN + "b(3) = conv3\nb(3)", 2, 3, "definition",
     "a parameter of definition 'b' must be a plain name", None),
    ("definition-keyword-parameter", IN + "b(c, s=1) = conv3(c)\nb(3, 1)", 2, 6, "definition",
     "must be a plain name", None),
    ("definition-unknown-value", IN + "blk(c, s) = conv3(c, stride=t)\nblk(8, 1)", 2, 22, "argument",
     "argument 'stride' of conv must be an integer >= 1, got 't'", "its parameters: c, s"),
    ("definition-unknown-value-arith", IN + "blk(c, s) = conv3(c*k)\nblk(8, 1)", 2, 21, "argument",
     "'k' is not a number", "the parameters of blk are: c, s"),
    ("definition-unknown-count", IN + "blk(c, n) = conv3(c)*m\nblk(8, 2)", 2, 22, "argument",
     "a repetition count must be an integer, got 'm'", "the parameters of blk are: c, n"),

    # ---- shapes --------------------------------------------------------------------------------
    ("conv-after-fc", "conv3 - fc(10) - conv3", 1, 18, "shape",
     "conv needs an image (CxHxW) or a sequence (CxL), but its input is a vector of 10", "before fc"),
    ("pool-after-gap", "conv3 - gap - pool", 1, 15, "shape", "needs an image (CxHxW) or a sequence", None),
    ("groups-not-dividing", "conv3(10, groups=4)", 1, 11, "argument",
     "groups=4 must divide both the input channels (3) and the filters (10)", None),
    ("maxout-not-dividing", "conv3(10) - maxout(3)", 1, 20, "shape", "divisible by 3", None),

    # ---- merges -------------------------------------------------------------------------------
    ("concat-different-hw", "conv3(8) - (conv3(8) | pool - conv3(8) | conv3(4, stride=2, pad=1))", 1, 12, "merge",
     "branches cannot be concatenated: branch 1 (conv3(8)) gives 8x32x32, branch 2 (pool - conv3(8)) "
     "gives 8x16x16, branch 3 (conv3(4, stride=2, pad=1)) gives 4x16x16", "same height and width"),
    ("sum-different-channels", IN + "conv3(8) -\n  (conv3(8) + conv3(16))", 3, 3, "merge",
     "branches cannot be added: branch 1 (conv3(8)) gives 8x32x32, branch 2 (conv3(16)) gives 16x32x32",
     "conv1(c, stride=s)"),
    ("sum-id-after-width-change", "(conv3(16) + id)", 1, 1, "merge", "branch 2 (id) gives 3x32x32", None),

    # ---- doesn't fit -----------------------------------------------------------------------------
    ("design-example", "conv3(8, stride=3) - relu", 1, 1, "fit",
     "conv3(stride=3) does not fit its 7x7 input: (7 + 0 - 3)/3 + 1 = 2.33", "column 7",
     {"input": "3x7x7", "classes": 10}),
    ("googlenet-pool-floor", "input 64x112x112\nmaxpool3(stride=2)", 2, 1, "fit",
     "maxpool3(stride=2) does not fit its 112x112 input: (112 + 0 - 3)/2 + 1 = 55.5", "round=ceil"),
    ("fit-after-pool", "conv3 - pool - conv5(8, stride=2, pad=valid)", 1, 16, "fit",
     "does not fit its 16x16 input", None),

    # ---- leaves nothing -----------------------------------------------------------------------------
    ("conv5-on-3x3", "input 1x3x3\nconv5(8, pad=valid)", 2, 1, "empty",
     "conv5 leaves nothing: its 5x5 window is larger than its padded 3x3 input", None, {}),
    ("too-many-pools", "input 3x8x8\nconv3 - pool - pool - pool - pool", 2, 30, "empty",
     "maxpool2 leaves nothing", "fewer down-samplings"),

    # ---- fc, softmax ------------------------------------------------------------------------------
    ("fc-without-size-not-last", "conv3 - fc - relu - fc", 1, 9, "argument",
     "only the network's last fc may leave out its size", "fc(120)"),
    ("fc-without-size-no-classes", "conv3 - fc", 1, 9, "argument", "fc without a size needs `classes`",
     "classes 10", {"input": "3x32x32"}),
    ("softmax-in-the-middle", "conv3 - softmax - fc", 1, 9, "argument", "softmax is only allowed as the last layer",
     None),
    ("softmax-in-a-branch", "conv3 - (softmax | relu) - fc", 1, 10, "argument", "softmax is only allowed", None),

    # ---- empty -----------------------------------------------------------------------------------
    ("no-network", "input 3x32x32\nclasses 10\n# nothing else\n", 2, 11, "empty",
     "the model has no network expression", "conv3 - relu", {}),
    ("empty-text", "", 1, 1, "empty", "no network expression", None),
    ("only-id", "id", 1, 1, "empty", "the network has no layers", None),
    ("no-input", "conv3 - relu - fc", 1, 1, "header", "the model has no input shape", "input 3x32x32",
     {"classes": 10}),

    # ---- sizes ------------------------------------------------------------------------------------
    ("too-many-layers", "relu*30000", 1, 6, "size", "repetition count 30,000 is too large", None),
    ("nested-repeats-explode", "[[relu*200]*200]*200", 1, 3, "size", "more than 20,000 layers", None),
    ("nested-id-repeats", "[[[id*1000]*1000]*1000] - conv3", 1, 4, "size", "steps to expand", None),
]
# fmt: on

# Errors inside repetitions and definition calls: the notes say where they were expanded.
EXPANSION_CASES = [
    # the width doubles and the size halves each round: only the 3rd pool meets an odd size
    ("repetition-3-of-3", "input 3x20x20\nwidth 8\n[conv3 - pool]*3 - fc", 3, 10, "fit",
     "maxpool2 does not fit its 5x5 input", ["in repetition 3 of [..]*3, line 3"]),
    # only the second round's residual sees 16 input channels against a 32-filter conv
    ("repetition-2-sum", "input 16x32x32\nwidth 16\n[(conv3 + id) - pool]*2 - fc", 3, 2, "merge",
     "branch 1 (conv3) gives 32x16x16, branch 2 (id) gives 16x16x16", ["in repetition 2 of [..]*2, line 3"]),
    ("repetition-of-call", "input 3x9x9\nb(c) = conv3(c, stride=2)\nb(8) - b(8)*2", 2, 8, "fit",
     "conv3(stride=2) does not fit its 4x4 input",
     ["in b(8), called at line 3:8", "in repetition 1 of b(8)*2, line 3"]),
    ("call-inside-repetition", "input 3x9x9\nb(c) = conv3(c, stride=2)\n[conv1 - b(8)]*3", 2, 8, "fit",
     "does not fit its 4x4 input", ["in b(8), called at line 3:10", "in repetition 2 of [..]*3, line 3"]),
    ("nested-repetitions", "input 3x12x12\nwidth 4\n[[conv3 - relu]*2 - pool]*3", 3, 21, "fit",
     "maxpool2 does not fit its 3x3 input", ["in repetition 3 of [..]*3, line 3"]),
    ("error-in-definition-argument", "input 3x32x32\nb(c) = conv3(c) - dropout(c)\nconv3 - b(2)", 2, 27,
     "argument", "argument 'p' of dropout must be a number in [0, 0.99], got 2",
     ["in b(2), called at line 3:9"]),
]


def _compile(text: str, kwargs: dict | None):
    if kwargs is None:
        kwargs = {"classes": 10}
        if not any(line.startswith("input") for line in text.splitlines()):
            kwargs["input"] = "3x32x32"
    return cnnc.compile(text, filename="model.cnn", **kwargs)


def _unpack(case):
    cid, text, line, col, kind, msg, *rest = case
    hint = rest[0] if rest else None
    kwargs = rest[1] if len(rest) > 1 else None
    return cid, text, line, col, kind, msg, hint, kwargs


def _check_rendering(err: SourceError, text: str, line: int, col: int) -> None:
    rendered = str(err)
    lines = rendered.split("\n")
    assert lines[0].startswith(f"model.cnn:{line}:{col}: error: "), rendered
    assert "Traceback" not in rendered
    source_line = text.split("\n")[line - 1]
    assert lines[1] == "    " + source_line, rendered
    caret = lines[2]
    assert caret.startswith("    " + " " * (col - 1) + "^"), rendered
    assert set(caret.strip()) == {"^"}, rendered
    # the caret never runs past the end of the source line
    assert len(caret) <= len(lines[1]) or len(caret.strip()) == 1, rendered


def test_corpus_is_large_and_covers_every_kind():
    assert len(CASES) + len(EXPANSION_CASES) >= 45
    kinds = {c[4] for c in CASES}
    assert {"syntax", "unknown-layer", "argument", "header", "definition", "shape", "merge", "fit",
            "empty", "size"} <= kinds
    assert len({c[0] for c in CASES + EXPANSION_CASES}) == len(CASES) + len(EXPANSION_CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_position_kind_and_message(case):
    cid, text, line, col, kind, msg, hint, kwargs = _unpack(case)
    with pytest.raises(SourceError) as info:
        _compile(text, kwargs)
    err = info.value
    assert err.kind == kind, str(err)
    assert msg in err.message, str(err)
    if hint is not None:
        assert err.hint and hint in err.hint, str(err)
    assert err.filename == "model.cnn"
    if line is None:
        assert err.span is None
        assert str(err).startswith("model.cnn: error: "), str(err)
        return
    assert (err.span.line, err.span.column) == (line, col), str(err)
    assert (err.line, err.column) == (line, col)
    _check_rendering(err, text, line, col)
    if err.hint:
        assert f"\n  {err.hint}" in str(err)


@pytest.mark.parametrize("case", EXPANSION_CASES, ids=[c[0] for c in EXPANSION_CASES])
def test_errors_inside_expansions_carry_notes(case):
    cid, text, line, col, kind, msg, notes = case
    with pytest.raises(SourceError) as info:
        _compile(text, None)
    err = info.value
    assert err.kind == kind, str(err)
    assert msg in err.message, str(err)
    assert (err.line, err.column) == (line, col), str(err)
    assert list(err.notes) == notes, str(err)
    rendered = str(err)
    for note in notes:
        assert f"  ({note})" in rendered
    # innermost note first, each on its own line after the hint
    tail = rendered.split("\n")[-len(notes):]
    assert tail == [f"  ({n})" for n in notes]
    _check_rendering(err, text, line, col)


# ---- the design's worked examples, in full ----------------------------------------------------


def test_design_doesnt_fit_example_exactly():
    text = "conv3(8, stride=3) - relu"
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="3x7x7", classes=10, filename="model.cnn")
    err = info.value
    lines = str(err).split("\n")
    assert lines[0] == ("model.cnn:1:1: error: conv3(stride=3) does not fit its 7x7 input: "
                        "(7 + 0 - 3)/3 + 1 = 2.33")
    assert lines[1] == "    conv3(8, stride=3) - relu"
    assert lines[2] == "    " + "^" * len("conv3(8, stride=3)")
    assert "column 7" in err.hint
    assert "pad=1" in err.hint and "stride=2" in err.hint


def test_design_example_inside_a_repetition_has_the_note():
    text = "input 3x7x7\n[conv3(8, stride=3) - relu]*1 - [conv1]*3"
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, filename="model.cnn")
    assert info.value.notes == ("in repetition 1 of [..]*1, line 2",)


@pytest.mark.parametrize("text", [
    "maxpool3(stride=2, round=ceil)",          # GoogLeNet's pool with ceil rounding
    "conv7(64, stride=2, pad=3)",               # ResNet's stem on 224: only padding left over
])
def test_fitting_windows_on_224(text):
    m = cnnc.compile(text, input="64x224x224" if "pool" in text else "3x224x224")
    assert m.summary.output_shape[1:] == (112, 112)


def test_googlenet_pool_floor_fails_and_ceil_works():
    with pytest.raises(SourceError) as info:
        cnnc.compile("maxpool3(stride=2)", input="192x56x56")
    assert info.value.kind == "fit" and "round=ceil" in info.value.hint
    m = cnnc.compile("maxpool3(stride=2, round=ceil)", input="192x56x56")
    assert m.summary.output_shape == (192, 28, 28)  # torchvision: ceil((56-3)/2)+1 = 28


def test_conv5_on_3x3_fits_with_same_padding():
    # only pad=valid leaves nothing (see the corpus); "same" padding keeps 3x3
    m = cnnc.compile("conv5(8)", input="1x3x3")
    assert m.summary.output_shape == (8, 3, 3)


def test_resnet_shortcut_1x1_stride2_on_56_fits():
    m = cnnc.compile("conv1(128, stride=2, bias=false)", input="64x56x56")
    assert m.summary.output_shape == (128, 28, 28)


def test_stride_larger_than_window_skips_columns_by_design():
    # 1x1/2 on 7: the last column (index 6) is covered; on 8 the last is skipped like every
    # other odd column, which the stride does anyway: both fine
    for size, out in ((7, 4), (8, 4)):
        m = cnnc.compile("conv1(4, stride=2)", input=f"3x{size}x{size}")
        assert m.summary.output_shape == (4, out, out)


# ---- rendering details ----------------------------------------------------------------------


def test_tabs_do_not_shift_the_caret():
    text = "conv3\t-\treul"
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="3x8x8", filename="model.cnn")
    err = info.value
    assert (err.line, err.column) == (1, 9)
    lines = str(err).split("\n")
    assert lines[2].index("^") - 4 == 8


def test_crlf_line_endings_count_lines_like_lark():
    text = "input 3x8x8\r\nclasses 10\r\nconv3 - reul\r\n"
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, filename="model.cnn")
    err = info.value
    assert (err.line, err.column) == (3, 9)
    assert str(err).split("\n")[1] == "    conv3 - reul"


def test_lone_carriage_return_is_not_a_line_break_in_the_listing():
    text = "conv3 -\rreul"  # Lark counts only '\n' as a line break
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, input="3x8x8", filename="model.cnn")
    err = info.value
    assert (err.line, err.column) == (1, 9)
    lines = str(err).split("\n")
    assert lines[2].index("^") - 4 == 8
    assert lines[1][4 + 8:].startswith("reul")


def test_multiline_span_carets_to_end_of_first_line():
    text = "input 3x8x8\nconv3(8) - (conv3(8)\n   + conv3(4))"
    with pytest.raises(SourceError) as info:
        cnnc.compile(text, filename="model.cnn")
    err = info.value
    assert err.kind == "merge" and (err.line, err.column) == (2, 12)
    caret = str(err).split("\n")[2]
    assert caret == "    " + " " * 11 + "^" * len("(conv3(8)")


def test_error_without_source_still_renders():
    err = SourceError("boom", None, "syntax")
    assert str(err) == "<string>: error: boom"


def test_errors_are_cnnc_errors():
    with pytest.raises(cnnc.CnncError):
        cnnc.compile("conv3 - reul", input="3x8x8")
    with pytest.raises(cnnc.UsageError):
        cnnc.compile("conv3", input="3x8x8x8")
    with pytest.raises(cnnc.UsageError):
        cnnc.compile("conv3", input="3x8x8").report(batch=0)
