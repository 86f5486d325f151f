"""A small inventory module: the file `infill demo` opens."""

import json
from dataclasses import dataclass


@dataclass
class Item:
    name: str
    price: float
    quantity: int


def load_items(path):
    with open(path, encoding="utf-8") as fh:
        return [Item(**row) for row in json.load(fh)]


def total_value(items):
    total = 0.0
    for item in items:
        total += item.price * item.quantity
    return total


def cheapest(items):
    return min(items, key=lambda item: item.price)


def count_in_stock(items):
    count = 0
    for item in items:
        if item.quantity > 0:
            count += 1
    return count


def most_expensive(items):
    return max(items, key=lambda item: item.)
