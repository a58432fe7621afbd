"""Use cases played in the window: Step shows the seed step, its explanation and
highlights its ladder rows; Play runs a flow to its verdict."""


def choose(panel, scenario_id):
    for row in range(panel.list.count()):
        if panel.list.item(row).text().startswith(scenario_id + " "):
            panel.list.setCurrentRow(row)
            return
    raise AssertionError(scenario_id)


def test_step_mode_explains_each_hop_and_highlights_its_rows(qtbot, window):  # noqa: F811
    panel = window.scenarios
    panel.pace_ms = 50
    choose(panel, "5.8.5")
    with qtbot.waitSignal(panel.stepDone, timeout=20000):
        panel.step_button.click()
    assert "step 1 of 2" in panel.position.text() and "seed step 1-5" in panel.position.text()
    assert "a person, not a technology" in panel.explain.text()
    highlighted = window.ladder.delegate.highlighted
    assert highlighted, "the rows of this step are highlighted on the ladder"
    with qtbot.waitSignal(panel.verdictReady, timeout=20000):
        panel.step_button.click()
    assert "PASSED" in panel.verdict_label.text()


def test_play_runs_a_flow_to_its_verdict_and_fills_the_requirements(qtbot, window):  # noqa: F811
    panel = window.scenarios
    panel.pace_ms = 50
    choose(panel, "5.9-threads")
    with qtbot.waitSignal(panel.verdictReady, timeout=30000):
        panel.play_button.click()
    assert "PASSED" in panel.verdict_label.text()
    states = {panel.requirement_tree.topLevelItem(i).text(0): panel.requirement_tree.topLevelItem(i).text(1)
              for i in range(panel.requirement_tree.topLevelItemCount())}
    assert states["CPM-IOP-xxx-4"] == "passed"
    assert states["CPM-IOP-001"] == "not exercised"
