import copy
import pickle

from iwlab.backends.recent import Recent


def test_keeps_the_newest_entries_and_setting_one_again_makes_it_the_newest():
    recent: Recent[str, int] = Recent(2)
    recent["a"], recent["b"] = 1, 2
    recent["a"] = 3            # a again: now b is the oldest
    recent["c"] = 4
    assert list(recent.items()) == [("a", 3), ("c", 4)]
    recent.update(d=5)         # every way in is bounded
    assert list(recent) == ["c", "d"]


def test_a_copy_keeps_its_entries_and_its_limit():
    recent: Recent[str, int] = Recent(2)
    recent["a"], recent["b"] = 1, 2
    for duplicate in (recent.copy(), copy.copy(recent), copy.deepcopy(recent), pickle.loads(pickle.dumps(recent))):
        assert list(duplicate.items()) == [("a", 1), ("b", 2)] and duplicate.limit == 2
        duplicate["c"] = 3
        assert list(duplicate) == ["b", "c"]
