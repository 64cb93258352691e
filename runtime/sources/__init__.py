"""Where frame pairs come from: ``frames.py`` (what every source yields: ``FramePair`` and
the skipped / unpaired records), ``streams.py`` (image folders, videos, cameras, MFNet PNGs,
``open_source`` and the pipelined ``stream`` loop), ``replay.py`` (a recording at its
sensors' rates) and ``multicamera.py`` (several camera pairs on one model)."""
