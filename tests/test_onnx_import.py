"""``cnnc import model.onnx`` (issue 23): classic CNNs built in PyTorch, exported with
``torch.onnx.export``, imported, and checked against references that do not come from cnnc:

* the parameter count equals PyTorch's (``sum(p.numel() for p in model.parameters())``);
* cnnc's forward pass with the imported weights equals onnxruntime's on the original file
  to 1e-4 of the largest logit;
* the text is folded (ResNet-18 in about a dozen lines) and ``cnnc check`` accepts it.

The networks are written here after torchvision's definitions (torchvision is not a test
dependency), with random weights and random batch-norm statistics. Inputs are reduced
(3x64x64 where the architecture allows) to keep the suite fast; the full-size ones are
marked slow. The round trip of ``models/``, the operators one by one and the broken files:
tests/test_onnx_import_graphs.py.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import cnnc

torch = pytest.importorskip("torch", reason="the import tests build their networks with PyTorch")
pytest.importorskip("onnx", reason="cnnc import needs the onnx package")
ort = pytest.importorskip("onnxruntime", reason="the reference is onnxruntime on the original file")
nn = torch.nn
F = torch.nn.functional

from cnnc.tools.onnx_import import import_onnx  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
TOL = 1e-4


# ---------------------------------------------------------------------------------------
# The networks, after torchvision's definitions
# ---------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes=1000):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes=1000):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


class VGG(nn.Module):
    """VGG-11 with batch norm (torchvision's configuration "A"); ``pool`` is the adaptive
    pooling's output size (7 at 224x224), ``hidden`` the classifier's width (4096)."""

    def __init__(self, num_classes=1000, pool=7, hidden=4096):
        super().__init__()
        layers, c = [], 3
        for v in [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool, pool))
        self.classifier = nn.Sequential(
            nn.Linear(512 * pool * pool, hidden), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000, hidden=4096):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, ch3x3red, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(cin, ch5x5red, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))  # sic, torchvision
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(cin, pool_proj, kernel_size=1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet without the auxiliary classifiers (aux_logits=False)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for m in (self.inception4a, self.inception4b, self.inception4c, self.inception4d, self.inception4e):
            x = m(x)
        x = self.inception5b(self.inception5a(self.maxpool4(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class Fire(nn.Module):
    def __init__(self, inplanes, squeeze, expand1x1, expand3x3):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class SqueezeNet11(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(512, num_classes, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


def _divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [ConvBNReLU(inp, hidden, kernel_size=1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0):
        super().__init__()
        setting = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                   [6, 160, 3, 2], [6, 320, 1, 1]]
        inp = _divisible(32 * width_mult)
        self.last_channel = _divisible(1280 * max(1.0, width_mult))
        features = [ConvBNReLU(3, inp, stride=2)]
        for t, c, n, s in setting:
            out = _divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        features.append(ConvBNReLU(inp, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features):  # torchvision: the list of all earlier feature maps
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers, cin, growth, bn_size):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size))

    def forward(self, init):
        features = [init]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """torchvision's DenseNet (features as a list, torch.cat of all of them per layer)."""

    def __init__(self, growth=32, blocks=(6, 12, 24, 16), init_features=64, bn_size=4, num_classes=1000):
        super().__init__()
        mods = [nn.Conv2d(3, init_features, 7, 2, 3, bias=False), nn.BatchNorm2d(init_features),
                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)]
        c = init_features
        for i, n in enumerate(blocks):
            mods.append(DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                mods += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False),
                         nn.AvgPool2d(2, 2)]
                c //= 2
        mods.append(nn.BatchNorm2d(c))
        self.features = nn.Sequential(*mods)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


# ---------------------------------------------------------------------------------------
# Export, import, compare
# ---------------------------------------------------------------------------------------


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics (so every folded constant matters), eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def export_onnx(model: nn.Module, shape, path: Path) -> Path:
    """torch.onnx.export with the TorchScript exporter (``dynamo=False``: the dynamo one
    needs onnxscript) in PRESERVE mode: in EVAL mode it folds every batch norm into its conv,
    which changes the parameter count the test compares."""
    x = torch.randn(1, *shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, str(path), dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}},
                          opset_version=17)
    return path


def torch_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_import(model: nn.Module, shape, tmp_path: Path, name: str, batch: int = 2):
    """Import ``model`` through ONNX; return (result, max error relative to the largest logit)."""
    path = export_onnx(randomized(model), shape, tmp_path / f"{name}.onnx")
    result = import_onnx(path)
    expected = torch_params(model)
    assert result.param_count == expected, (name, result.param_count, expected)
    again = cnnc.compile(result.text)  # the text alone: cnnc check accepts it, same count
    assert again.summary.total_params == expected, result.text
    net = result.model.network()
    net.load_state(result.state)
    x = np.random.default_rng(1).standard_normal((batch, *shape)).astype(np.float32)
    ours = net.forward(x)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert ours.shape == ref.shape
    err = float(np.abs(ours - ref).max() / np.abs(ref).max())
    print(f"\n{name}: {result.lines} lines, {expected:,} parameters, max error {err:.2e} "
          f"of the largest logit\n{result.text}")
    return result, err


FAST = {  # ResNet-18: test_resnet18_reads_like_the_lecture
    "vgg11_bn": (lambda: VGG(num_classes=10, pool=1, hidden=512), (3, 32, 32), 10),
    "alexnet": (lambda: AlexNet(num_classes=10, hidden=512), (3, 224, 224), 10),
    "googlenet": (lambda: GoogLeNet(num_classes=100), (3, 64, 64), 20),
    "squeezenet1_1": (lambda: SqueezeNet11(num_classes=10), (3, 64, 64), 14),
    "mobilenet_v2": (lambda: MobileNetV2(num_classes=10), (3, 64, 64), 40),
    "densenet_blocks": (lambda: DenseNet(growth=12, blocks=(4, 4), init_features=16, num_classes=10),
                        (3, 32, 32), 14),
}


@pytest.mark.parametrize("name", list(FAST))
def test_import_matches_pytorch_and_onnxruntime(name, tmp_path):
    build, shape, max_lines = FAST[name]
    result, err = check_import(build(), shape, tmp_path, name)
    assert err <= TOL, (name, err)
    assert result.lines <= max_lines, result.text


def test_resnet18_reads_like_the_lecture(tmp_path):
    result, err = check_import(resnet18(num_classes=10), (3, 64, 64), tmp_path, "resnet18", batch=1)
    assert err <= TOL
    text = result.text
    assert result.lines <= 13, text
    assert "res(c) = ( conv3(c, bias=false) - bn - relu - conv3(c, bias=false) - bn + id ) - relu" in text
    assert "res(64)*2" in text and "gap - fc" in text
    assert "stride=1" not in text and "dilation" not in text and "groups" not in text  # defaults left out
    assert text.startswith("# imported by cnnc from resnet18.onnx: 11,181,642 parameters\n")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11_bn_224", "mobilenet_v2_224", "densenet121"])
def test_import_full_size(name, tmp_path):
    build, shape = {
        "vgg11_bn_224": (lambda: VGG(num_classes=10, hidden=1024), (3, 224, 224)),
        "mobilenet_v2_224": (lambda: MobileNetV2(), (3, 224, 224)),
        "densenet121": (lambda: DenseNet(), (3, 64, 64)),
    }[name]
    result, err = check_import(build(), shape, tmp_path, name, batch=1)
    assert err <= TOL, (name, err)


def test_resnet50_bottlenecks_are_definitions(tmp_path):
    """The identity bottleneck and the projection one, whose first call has stride 1."""
    result, err = check_import(resnet50(num_classes=10), (3, 32, 32), tmp_path, "resnet50", batch=1)
    assert err <= TOL
    text = result.text
    assert "down(c, s) =" in text and "conv1(4*c, stride=s, bias=false)" in text, text
    assert "down(64, 1) - res(64)*2 - down(128, 2) - res(128)*3" in " ".join(text.split()), text
    assert result.lines <= 14, text


# ---------------------------------------------------------------------------------------
# The command line (broken files, the round trip of models/ and the operators one by one:
# tests/test_onnx_import_graphs.py, which needs no PyTorch)
# ---------------------------------------------------------------------------------------


def test_cli_writes_text_and_checkpoint(tmp_path, cli):
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 5))
    src = export_onnx(randomized(model), (3, 8, 8), tmp_path / "small.onnx")
    out, run = tmp_path / "small.cnn", tmp_path / "run"
    r = cli("import", str(src), "-o", str(out), "--weights-out", str(run))
    assert r.code == 0, r
    assert out.read_text() == ("# imported by cnnc from small.onnx: 869 parameters\ninput 3x8x8\nclasses 5\n\n"
                               "conv3(8) - relu - pool - fc\n")
    assert cli("check", str(out)).code == 0
    # the checkpoint serves export: the file that comes out computes what the original does
    back = tmp_path / "back.onnx"
    r = cli("export", str(out), "--weights", str(run), "-o", str(back))
    assert r.code == 0, r
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    a = ort.InferenceSession(str(src)).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(back)).run(None, {"input": x})[0]
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    r = cli("import", str(src))  # without -o: the text on stdout
    assert r.code == 0 and r.out.startswith("# imported by cnnc from small.onnx")
