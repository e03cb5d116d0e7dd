"""`python -m edge`: run an agent in the foreground, configured by SIGHTLINE_EDGE_* (edge.settings)."""

from edge.agent import main

main()
