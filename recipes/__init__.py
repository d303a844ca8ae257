"""The recipes tapir ships, installed as package data: ``--recipe default`` names one,
``tapir init`` copies one."""
