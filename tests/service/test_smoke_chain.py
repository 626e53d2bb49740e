from orchestrator.domain.states import Kind, State
from orchestrator.services import audit, catalog
from tests.factories import District


def test_customized_image_walks_the_whole_chain_to_released(district: District) -> None:
    district.base()
    ref = district.custom(to=State.PUBLISHED)
    view = catalog.show(district.ctx, district["btc.lincoln"], Kind.CUSTOM_IMAGE, ref)
    assert view.state is State.PUBLISHED
    assert audit.verify(district.ctx, district["it.ana"]).entries > 10
