"""Processors: turn mirrored media into viewable, catalogued datasets.

One module per job: :mod:`.probe` inspects a video without downloading it (over a
:class:`.rangefile.RangeFile`), :mod:`.transcode` plans and runs ffmpeg, :mod:`.pyramid`
builds tiled TIFF pyramids with pyvips and :mod:`.images` checks and converts the frames of
an image sequence.
"""
