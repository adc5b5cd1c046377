"""`python -m bench` (what `make bench` runs): every benchmark, then the report."""

from bench.run import main

if __name__ == "__main__":
    main()
