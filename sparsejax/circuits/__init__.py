"""Circuits: node masks learned for many tasks at once, the search for the smallest circuit, the
circuit graph, its analysis and the HTML viewer."""
