"""
The pydoctor system for splicetx's API reference.

splicetx defines its public names in private subpackages (C{splicetx._relay},
C{splicetx._proxy} ...) and re-exports them from the public modules
(C{splicetx}, C{splicetx.proxy}, C{splicetx.pools}, C{splicetx.testing}).
pydoctor documents a re-exported name at its public home only when the
defining module does not list it in its own C{__all__}; splicetx's private
modules do list their names, so without this system every public class would
be documented under its private path.  Here a name that a public module
exports is moved there whenever it was defined under a private package.
"""

from pydoctor import astbuilder, model


def _isPrivatePath(fullName):
    return any(part.startswith("_") for part in fullName.split("."))


def _keepNamespace(ob, origin):
    """
    Resolve the names in C{ob}'s docstrings in the module that defines it,
    not in the one it was moved to: C{L{Deferred}} in a class defined where
    C{Deferred} is imported still links after the class moved to C{splicetx}.
    """
    if isinstance(ob, model.Class):

        def localNameToFullName(name):
            if name in ob.contents:
                return ob.contents[name].fullName()
            if name in ob._localNameToFullName_map:
                return ob._localNameToFullName_map[name]
            return origin._localNameToFullName(name)

        def isNameDefined(name):
            first = name.split(".")[0]
            return (
                first in ob.contents
                or first in ob._localNameToFullName_map
                or origin.isNameDefined(first)
            )

        ob._localNameToFullName = localNameToFullName
        ob.isNameDefined = isNameDefined
        # The bases are linked in the scope of the class's parent, the public
        # module: make the names they start with known there.
        public = ob.parent
        for base, _ in ob.rawbases:
            first = base.split(".")[0]
            if not public.isNameDefined(first) and origin.isNameDefined(first):
                public._localNameToFullName_map[first] = origin.expandName(first)
    else:
        ob._localNameToFullName = origin._localNameToFullName
        ob.isNameDefined = origin.isNameDefined


class _ModuleVisitor(astbuilder.ModuleVistor):
    def _handleReExport(self, curr_mod_exports, origin_name, as_name, origin_module):
        current = self.builder.current
        if (
            as_name in curr_mod_exports
            and isinstance(current, model.Module)
            and not _isPrivatePath(current.fullName())
            and _isPrivatePath(origin_module.fullName())
        ):
            ob = origin_module.contents.get(origin_name)
            if ob is not None and ob.parent is origin_module:
                ob.reparent(current, as_name)
                _keepNamespace(ob, origin_module)
                return True
        return super()._handleReExport(
            curr_mod_exports, origin_name, as_name, origin_module
        )


class _ASTBuilder(astbuilder.ASTBuilder):
    ModuleVistor = _ModuleVisitor


class SpliceSystem(model.System):
    """
    pydoctor's system, with splicetx's public names at their public homes.
    """

    defaultBuilder = _ASTBuilder
