"""The live coach: feedback over a whole workout, from a video file, a camera or a stream, as it happens.

    source.py     opening a file, a V4L2 camera or a stream URL; frames with their times, as they come
    pushed.py     frames a client pushes (the serving stream's source), with the client's times
    windows.py    the fixed-rate frame grid, the window schedule, the frames of each window
    encoder.py    a window's video features, with each frame's CLIP features computed once and reused
    policy.py     what is said: change-based (with repeats at most every N s) or every N s
    session.py    the loop: read, run windows (skipping those that fall behind real time), emit, report
    commands.py   `videogemma coach SOURCE`

It reads loading, processing, modeling, inference and datasets; never train/.
"""
