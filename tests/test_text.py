"""Message wording: counts agree with their nouns."""
from cnnc.text import plural


def test_plural_agrees_with_the_count():
    assert plural(1, "kernel") == "1 kernel"
    assert plural(0, "epoch") == "0 epochs"
    assert plural(2, "epoch") == "2 epochs"
    assert plural(1200, "image") == "1,200 images"
    assert plural(3, "class", "classes") == "3 classes"
    assert plural(1, "class", "classes") == "1 class"
