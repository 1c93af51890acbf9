# Rules of this stage; see workflow/rules/common.smk for the helpers.
