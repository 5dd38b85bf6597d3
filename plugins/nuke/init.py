"""RVM Matte plugin: start-up (runs in every Nuke session, GUI or not, once its folder is on the plugin path).

Nothing needs setting up here: the RVM Matte node is a standard Group (Input, Read, Switch, Output), so a
script using it opens and renders on a farm Nuke without this plugin; the plugin's code is only needed
by the node's buttons, which import ``rvm_nuke`` from this folder when clicked.
"""
