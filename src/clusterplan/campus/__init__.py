"""The campus as a living system (issue #16): serving by day, training by night, power by the hour.

``scenario.py`` (the ``campus_simulation:`` section, validated), ``sizing.py`` (deployments,
plans per size, goodput, resize cost, power and price coefficients: computed once),
``simulate.py`` (the vectorised hourly simulation of one policy), ``run.py`` (the scenario to
results and records), ``output.py`` (terminal tables and the Markdown/HTML report).
"""
