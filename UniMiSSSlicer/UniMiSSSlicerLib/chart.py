"""A live chart of fine-tuning against minutes: loss, mean validation Dice and, from a base model, the
base model's mean Dice on the same validation cases, as Slicer plot nodes."""
from __future__ import annotations

import math

import vtk

import slicer

COLUMNS = ("epoch", "minutes", "loss", "validation Dice", "base model Dice")
COLOURS = {"loss": (0.85, 0.33, 0.1), "validation Dice": (0.0, 0.45, 0.74), "base model Dice": (0.5, 0.5, 0.5)}


class TrainingChart:
    """A table node (one row per validation), plot series, a chart node and a view node for it, all in the scene.

    `add(metric_event)` appends what the core reports; the base model's series appears with the first event
    that carries its Dice (fine-tuning from a base), so the user sees whether fine-tuning helps.
    `remove()` takes every node out again.
    """

    def __init__(self, scene=None, name: str = "UniMiSS fine-tuning"):
        self.scene, self.name = scene or slicer.mrmlScene, name
        self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} metrics")
        for column in COLUMNS:
            array = self.table.AddColumn()
            array.SetName(column)
        # vtkMRMLTableNode columns start as strings; these are numbers.
        for column in COLUMNS:
            self.table.SetColumnType(column, vtk.VTK_DOUBLE)
        self.table.SetUseColumnTitleAsColumnHeader(True)
        self.chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        self.series = {}
        for column in ("loss", "validation Dice"):
            self._addSeries(column)
        self.chart.SetTitle(name)
        self.chart.SetXAxisTitle("minutes")
        self.chart.SetYAxisTitle("loss / Dice")
        self.view = self.scene.AddNewNodeByClass("vtkMRMLPlotViewNode", f"{name} view")  # for a qMRMLPlotView
        self.view.SetPlotChartNodeID(self.chart.GetID())

    def _addSeries(self, column: str) -> None:
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.name} {column}")
        series.SetAndObserveTableNodeID(self.table.GetID())
        series.SetXColumnName("minutes")
        series.SetYColumnName(column)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetColor(*COLOURS[column])
        self.series[column] = series
        self.chart.AddAndObservePlotSeriesNodeID(series.GetID())

    @property
    def nodes(self) -> list:
        return [self.view, self.chart, *self.series.values(), self.table]

    def add(self, event: dict) -> None:
        """Append one `{"event": "metric", "epoch": .., "minutes": .., "loss": .., "val_dice": {name: dice},
        "base_val_dice": {name: dice}}` event (`base_val_dice` only when fine-tuning from a base model)."""
        base = meanDice(event.get("base_val_dice"))
        if not math.isnan(base) and "base model Dice" not in self.series:
            self._addSeries("base model Dice")
        table = self.table.GetTable()
        row = self.table.AddEmptyRow()
        values = (event.get("epoch", row + 1), event.get("minutes", float("nan")), event.get("loss", float("nan")),
                  meanDice(event.get("val_dice")), base)
        for column, value in zip(COLUMNS, values):
            table.GetColumnByName(column).SetValue(row, float(value))
        table.Modified()
        self.table.Modified()

    def rows(self) -> list[tuple]:
        """One tuple of COLUMNS per row."""
        table = self.table.GetTable()
        return [tuple(table.GetColumnByName(c).GetValue(r) for c in COLUMNS) for r in range(table.GetNumberOfRows())]

    def remove(self) -> None:
        for node in self.nodes:
            if node is not None and self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)


def meanDice(dice) -> float:
    """The mean of a {class: Dice} mapping; NaN when there is none."""
    return sum(dice.values()) / len(dice) if dice else float("nan")
