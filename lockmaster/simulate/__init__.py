"""`lockmaster simulate`: play a scenario of review events and job outcomes against the real
workflows on a real Temporal server, with a simulated Gerrit and a simulated executor
(spec/scenarios.md).

    scenario.py    the scenario file's models         loading.py   validation, located errors
    references.py  cross references                   layout.py    default layout, the config
    gerrit.py      the simulated review system        executor.py  the simulated `run_build`
    events.py      applying events                    settle.py    "nothing in progress"
    runner.py      running it all                     report.py    JSON report and summary
"""

from lockmaster.simulate.loading import ScenarioError, load_scenario, parse_scenario
from lockmaster.simulate.report import summary
from lockmaster.simulate.runner import SimulationError, run_simulation

__all__ = [
    "ScenarioError",
    "SimulationError",
    "load_scenario",
    "parse_scenario",
    "run_simulation",
    "summary",
]
