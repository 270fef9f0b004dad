"""The kabar client matrix against ejabberd (see client_matrix.py).

Run: /usr/bin/python3 test_client_ejabberd.py --kabard PATH --kabarctl PATH
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client_matrix  # noqa: E402

if __name__ == "__main__":
    client_matrix.main("ejabberd")
