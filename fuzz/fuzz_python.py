"""atheris (coverage-guided, libFuzzer engine) over the Python parsers of untrusted files: the shard
index file and the wids JSON. `python fuzz/fuzz_python.py shard_index|wids_json [libFuzzer flags]`;
`make fuzz` runs it with a time budget. The contract is checks.py's."""
import sys

import atheris

with atheris.instrument_imports():
    import checks


def main():
    target = sys.argv.pop(1)

    def one_input(data: bytes):
        if target == "shard_index" and data[:1] == b"S":
            data = checks.shard_index_from_arrays(data[1:])   # right checksum, fuzzed structure
        checks.run(target, data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
