"""Pure rules of the district: states, lifecycle, approval policy, sunset arithmetic.

Nothing here does I/O or reads the clock.
"""
