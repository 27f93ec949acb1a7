"""One module per on-disk format; each reads files into a :class:`~cnnc.training.data.Dataset`."""
