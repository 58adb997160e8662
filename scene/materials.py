"""Unlit (emission) materials: the colours a point cloud or a depth plane shows are the footage's.

Emission renders the same in Cycles and EEVEE and needs no lights.
"""

from __future__ import annotations

import bpy

from .compat import ensure_node_tree


def _emission_material(name: str):
    mat = bpy.data.materials.new(name)
    ensure_node_tree(mat)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    out = nodes.new("ShaderNodeOutputMaterial")
    emit = nodes.new("ShaderNodeEmission")
    emit.location = (-250, 0)
    out.location = (0, 0)
    links.new(emit.outputs["Emission"], out.inputs["Surface"])
    return mat, emit


def attribute_material(name: str, attribute: str = "Col"):
    """A material whose colour is the geometry attribute ``attribute`` (point colours)."""
    mat, emit = _emission_material(name)
    attr = mat.node_tree.nodes.new("ShaderNodeAttribute")
    attr.attribute_type = "GEOMETRY"
    attr.attribute_name = attribute
    attr.location = (-500, 0)
    mat.node_tree.links.new(attr.outputs["Color"], emit.inputs["Color"])
    return mat


def image_material(name: str, image, uv_map: str = "UVMap"):
    """A material showing ``image`` through the UV map ``uv_map``."""
    mat, emit = _emission_material(name)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map = uv_map
    uv.location = (-800, 0)
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.extension = "EXTEND"
    tex.location = (-550, 0)
    links.new(uv.outputs["UV"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], emit.inputs["Color"])
    return mat
