"""RVM Matte plugin: the Nodes toolbar entry and Preferences > RVM (GUI sessions only)."""

import nuke

import rvm_nuke.node

_toolbar = nuke.menu("Nodes").addMenu("RVM")
_toolbar.addCommand("RVM Matte", "import rvm_nuke.node\nrvm_nuke.node.create_node()")
rvm_nuke.node.register_preferences()
