"""The named data sets: class names, aliases, published checksums and download mirrors.

:data:`CHECKSUMS` and :data:`DOWNLOADS` are dictionaries (tests replace entries in them).
"""
from __future__ import annotations

MNIST_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

#: Names :func:`resolve_dataset` knows (aliases map to these).
KNOWN_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", "cifar10", "waveforms")
ALIASES = {
    "digits": "digits", "sklearn-digits": "digits", "waveforms": "waveforms",
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist", "fashion": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10",
}

#: Test split of an .npz file without x_test/y_test, or of an image folder without
#: train/ and test/: a stratified holdout of this fraction, drawn with this seed.
HOLDOUT_FRACTION = 1.0 / 6.0
HOLDOUT_SEED = 0

#: Published checksums of the canonical files: file name -> (md5, sha256 or None).
#: MNIST and Fashion-MNIST md5s are the ones their authors published; the sha256s were
#: computed on copies whose md5 matched (see docs/tools.md, "Data").
CHECKSUMS: dict[str, dict[str, tuple[str, str | None]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                       "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",
                                       "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",
                                      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",
                                      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                       "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",
                                       "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",
                                      "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",
                                      "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    "cifar10": {
        "cifar-10-binary.tar.gz": ("c32a1d4ab5d03f1284b67883e8d87530", None),
    },
}

#: Where missing named data sets are fetched from, tried in order.
DOWNLOADS: dict[str, tuple[str, ...]] = {
    # The original yann.lecun.com files, mirrored by PyTorch (torchvision's first choice).
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
}
DOWNLOAD_TIMEOUT = 10.0
