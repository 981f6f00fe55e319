"""The programs behind ``freecg-md remd``, ``langevin``, ``stability``, ``plot`` and
``reduce`` (each module's ``main(argv)``; :mod:`freecg_md.cli` dispatches to them)."""
