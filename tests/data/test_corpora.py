"""The offline corpora: the standard library's code and its documentation prose."""

import platform

from research.data import corpora


def test_code_documents_are_sorted_stdlib_modules_without_tests():
  doc_ids = [doc_id for doc_id, _ in corpora.stdlib_code_documents()]
  assert 'json/decoder.py' in doc_ids
  assert doc_ids == sorted(doc_ids)
  assert all(doc_id.endswith('.py') for doc_id in doc_ids)
  for doc_id in doc_ids:
    assert not {'test', 'tests', 'idlelib', 'lib2to3', 'site-packages'} & set(doc_id.split('/'))


def test_code_document_text_is_the_file():
  texts = dict(corpora.stdlib_code_documents())
  assert 'class JSONDecoder' in texts['json/decoder.py']


def test_prose_has_pydoc_topics_and_docstrings(prose_documents):
  texts = dict(prose_documents)
  assert texts['topic/assert'].startswith('The "assert" statement')
  decoder = texts['docstrings/json/decoder.py']
  assert decoder.startswith('Implementation of JSONDecoder')
  assert 'Simple JSON <https://json.org> decoder' in decoder
  assert all(doc_id.startswith(('topic/', 'docstrings/')) for doc_id in texts)
  assert all(text.strip() for text in texts.values())


def test_module_docstrings_in_source_order_and_cleaned():
  source = '''"""Module doc."""

class A:
  """Class A.

  Detail:
    indented.
  """

  def f(self):
    """Method f."""

def g():
  pass

async def h():
  """Coroutine h."""
'''
  assert corpora.module_docstrings(source) == [
      'Module doc.', 'Class A.\n\nDetail:\n  indented.', 'Method f.', 'Coroutine h.']
  assert corpora.module_docstrings('def broken(:') == []


def test_python_version_recorded():
  assert corpora.PYTHON_VERSION == platform.python_version()
