"""Files shipped inside rtpick: the bundled demo model (``rtpick:digits``) and its labelled evaluation set.

``scripts/train_digits.py`` makes every binary file here; ``README.md`` beside this file says how and what it
scores. Nothing here is downloaded at run time.
"""
