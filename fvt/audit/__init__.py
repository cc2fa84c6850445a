"""fvt.audit: the training set checked before you train on it (``fvt data audit DIR|RUN``).

Every image is embedded once with a model (``fvt.evaluation.embeddings``, cached by file content
and model); then

* ``labels``:     out-of-fold class probabilities (scikit-learn) and likely label errors (cleanlab);
* ``duplicates``: near-duplicates by perceptual hash (imagehash) and embedding similarity --
                  within a class, across classes (conflicting labels), across train/val/test (leaks);
* ``outliers``:   images far from every other image, and the class imbalance ratio;
* ``writers`` / ``page``: audit.csv, relabel.csv (for ``fvt train --relabel``), audit.json, audit.html.

``source`` reads every layout fvt trains on (through ``fvt.data.build_data``; shards in place).
cleanlab and imagehash come with the ``[audit]`` extra.
"""
