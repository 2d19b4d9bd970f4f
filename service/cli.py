"""r2sf cli placeholder"""


def main() -> None: ...
