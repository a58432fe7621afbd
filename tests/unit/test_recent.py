from iwlab.backends.recent import Recent


def test_keeps_the_newest_entries_and_setting_one_again_makes_it_the_newest():
    recent: Recent[str, int] = Recent(2)
    recent["a"], recent["b"] = 1, 2
    recent["a"] = 3            # a again: now b is the oldest
    recent["c"] = 4
    assert list(recent.items()) == [("a", 3), ("c", 4)]
    recent.update(d=5)         # every way in is bounded
    assert list(recent) == ["c", "d"]
